//! The Postgres source's slot management and replication stream against the real dev Postgres 15:
//! the publication and slot are created on first start, changes arrive decoded and in order,
//! confirming a position moves the slot, and the slot keeps advancing while only tables outside
//! the publication are written (so WAL does not pile up).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::pg_source::{SlotGuard, validated_pg_source};
use support::pipeline::{Warehouse, fresh_warehouse, pg_client, wait_until};
use tidemark::config::{SecretUrl, SourceConfig};
use tidemark::source::postgres::pgoutput::PgOutputMessage;
use tidemark::source::postgres::slot::{
    PublicationChange, StartDecision, WalPosition, create_slot, decide_start, ensure_publication,
    read_slot,
};
use tidemark::source::postgres::stream::{PgStream, StreamItem, StreamOptions};

fn source(url: &str, names: &str) -> SourceConfig {
    validated_pg_source("stream-test", url, names)
}

/// Reads items until `enough` says so, or panics after 30 s.
async fn read_until(
    stream: &mut PgStream,
    mut enough: impl FnMut(&[StreamItem]) -> bool,
) -> Vec<StreamItem> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut items = Vec::new();
    while !enough(&items) {
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(left, stream.next_items(&mut items))
            .await
            .unwrap_or_else(|_| panic!("stream stalled; read so far: {items:#?}"))
            .unwrap();
    }
    items
}

fn commits(items: &[StreamItem]) -> Vec<WalPosition> {
    items
        .iter()
        .filter_map(|i| match i {
            StreamItem::Message {
                message: PgOutputMessage::Commit(c),
                ..
            } => Some(WalPosition(c.end_lsn.0)),
            _ => None,
        })
        .collect()
}

fn kind(item: &StreamItem) -> &'static str {
    match item {
        StreamItem::KeepAlive { .. } => "keepalive",
        StreamItem::Message { message, .. } => match message {
            PgOutputMessage::Begin(_) => "begin",
            PgOutputMessage::Commit(_) => "commit",
            PgOutputMessage::Relation(_) => "relation",
            PgOutputMessage::Insert(_) => "insert",
            PgOutputMessage::Update(_) => "update",
            PgOutputMessage::Delete(_) => "delete",
            PgOutputMessage::Truncate(_) => "truncate",
            _ => "other",
        },
    }
}

/// The slot's confirmed position, and how much WAL before `upto` it still retains (from its
/// restart LSN up to `upto`). Measured against a given point, not the server's current WAL end,
/// so that other tests writing to the same server do not count.
async fn confirmed_and_retained(
    db: &Warehouse,
    slot: &str,
    upto: WalPosition,
) -> (WalPosition, i64) {
    let row = db
        .client
        .query_one(
            "SELECT confirmed_flush_lsn::text,
                pg_wal_lsn_diff($2::text::pg_lsn, restart_lsn)::bigint
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot, &upto.to_string()],
        )
        .await
        .unwrap();
    (
        WalPosition::parse(&row.get::<_, String>(0)).unwrap(),
        row.get(1),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_stream_in_order_and_confirmations_move_the_slot_also_when_idle() {
    let db = fresh_warehouse("pgstream").await;
    db.client
        .batch_execute(
            "CREATE SCHEMA shop; CREATE SCHEMA noise;
             CREATE TABLE shop.t (id int PRIMARY KEY, v text);
             CREATE TABLE noise.busy (id bigserial PRIMARY KEY, pad text);",
        )
        .await
        .unwrap();
    let names = db.db.to_lowercase();
    let source = source(&db.url, &names);
    let pg = source.postgres().expect("a Postgres source");
    let _cleanup = SlotGuard {
        url: db.url.clone(),
        slot: pg.slot.clone(),
    };

    // First start: publication and slot are created.
    let ensure = async || ensure_publication(&db.client, &source, pg).await.unwrap();
    let quoted = |names: &[&str]| -> Vec<String> {
        names.iter().map(|n| format!("\"shop\".\"{n}\"")).collect()
    };
    let created = ensure().await;
    assert!(
        created.created && created.added == quoted(&["t"]),
        "{created:?}"
    );
    assert_eq!(ensure().await, PublicationChange::default(), "reused");
    let members = async || -> i64 {
        db.client
            .query_one(
                "SELECT count(*) FROM pg_publication_tables WHERE pubname = $1",
                &[&pg.publication],
            )
            .await
            .unwrap()
            .get(0)
    };
    assert_eq!(members().await, 1, "only the included table is published");
    // Included tables created later join at the next start; a partitioned table is published
    // through its partitions, and is not added twice. A table that cannot identify its rows is
    // left out: published, the source would refuse its updates and deletes.
    db.client
        .batch_execute(
            "CREATE TABLE shop.later (id int PRIMARY KEY);
             CREATE TABLE shop.parts (id int PRIMARY KEY) PARTITION BY RANGE (id);
             CREATE TABLE shop.parts_1 PARTITION OF shop.parts FOR VALUES FROM (0) TO (10);
             CREATE TABLE shop.keyless (v text);
             CREATE TABLE noise.later (id int PRIMARY KEY);",
        )
        .await
        .unwrap();
    let extended = ensure().await;
    assert_eq!(
        extended,
        PublicationChange {
            added: quoted(&["later", "parts"]),
            without_identity: quoted(&["keyless"]),
            ..PublicationChange::default()
        }
    );
    db.client
        .batch_execute("INSERT INTO shop.keyless VALUES ('x'); UPDATE shop.keyless SET v = 'y';")
        .await
        .expect("the source still accepts updates of a keyless table");
    assert_eq!(ensure().await.added, Vec::<String>::new());
    assert_eq!(members().await, 3, "t, later and the partition parts_1");
    db.client
        .batch_execute("ALTER TABLE shop.keyless REPLICA IDENTITY FULL")
        .await
        .unwrap();
    assert_eq!(
        ensure().await.added,
        quoted(&["keyless"]),
        "once it can, it joins"
    );
    // A user who does not own the publication cannot add to it: the tables are named, the start
    // goes on with the tables the publication has.
    let role = format!("{names}_other");
    db.client
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS \"{role}\"; CREATE ROLE \"{role}\" LOGIN;
             GRANT USAGE ON SCHEMA shop TO \"{role}\";
             CREATE TABLE shop.unowned (id int PRIMARY KEY);"
        ))
        .await
        .unwrap();
    let other_url = db.url.replacen("postgres@", &format!("{role}@"), 1);
    assert_ne!(other_url, db.url, "the test URL names user postgres");
    let other = pg_client(&other_url).await;
    let change = ensure_publication(&other, &source, pg).await.unwrap();
    let Some((tables, message)) = &change.refused else {
        panic!("expected a refusal, got {change:?}");
    };
    assert_eq!(*tables, quoted(&["unowned"]));
    assert!(message.contains("must be owner"), "{message}");
    drop(other);
    db.client
        .batch_execute(&format!(
            "DROP TABLE shop.unowned; REVOKE USAGE ON SCHEMA shop FROM \"{role}\"; DROP ROLE \"{role}\";"
        ))
        .await
        .unwrap();
    let slot = read_slot(&db.client, &source.id, pg).await.unwrap();
    assert_eq!(
        decide_start(&source.id, &pg.slot, &db.db, None, slot.as_ref()).unwrap(),
        StartDecision::CreateSlot
    );
    let start = create_slot(&db.client, &source.id, pg).await.unwrap();

    // One statement per call: a multi-statement simple query would be one transaction.
    for statement in [
        "SET synchronous_commit = on",
        "INSERT INTO shop.t VALUES (1, 'a'), (2, 'b')",
        "UPDATE shop.t SET v = 'c' WHERE id = 1",
        "DELETE FROM shop.t WHERE id = 2",
    ] {
        db.client.batch_execute(statement).await.unwrap();
    }
    let options = StreamOptions {
        source_id: Arc::from("stream-test"),
        url: SecretUrl::new(db.url.clone()),
        slot: pg.slot.clone(),
        publication: pg.publication.clone(),
        start,
        status_interval: Duration::from_millis(500),
    };
    let mut stream = PgStream::connect(&options).await.unwrap();
    let items = read_until(&mut stream, |items| commits(items).len() >= 3).await;
    let kinds: Vec<&str> = items
        .iter()
        .map(kind)
        .filter(|k| *k != "keepalive")
        .collect();
    assert_eq!(
        kinds,
        [
            "begin", "relation", "insert", "insert", "commit", "begin", "update", "commit",
            "begin", "delete", "commit"
        ]
    );
    let last = *commits(&items).last().unwrap();
    assert!(last > start);

    // Confirmed after the (here: imagined) warehouse commit: the slot follows.
    stream.confirm(last);
    assert!(
        wait_until(Duration::from_secs(15), async || {
            confirmed_and_retained(&db, &pg.slot, last).await.0 >= last
        })
        .await,
        "the slot did not take the confirmation"
    );

    // Only an unpublished table is written: keepalives carry the WAL end, and confirming them
    // keeps the slot's retained WAL small.
    for _ in 0..8 {
        db.client
            .batch_execute(
                "INSERT INTO noise.busy (pad) SELECT repeat(md5(g::text), 32)
                 FROM generate_series(1, 4000) g;",
            )
            .await
            .unwrap();
    }
    db.client
        .batch_execute("SET synchronous_commit = on; SELECT pg_switch_wal(); CHECKPOINT;")
        .await
        .unwrap();
    let wal_now: String = db
        .client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let wal_now = WalPosition::parse(&wal_now).unwrap();
    let items = read_until(&mut stream, |items| {
        items
            .iter()
            .any(|i| matches!(i, StreamItem::KeepAlive { wal_end } if *wal_end >= wal_now))
    })
    .await;
    assert!(
        items.iter().all(|i| !matches!(
            i,
            StreamItem::Message {
                message: PgOutputMessage::Insert(_),
                ..
            }
        )),
        "rows of an unpublished table arrived: {items:#?}"
    );
    let wal_end = items
        .iter()
        .filter_map(|i| match i {
            StreamItem::KeepAlive { wal_end } => Some(*wal_end),
            _ => None,
        })
        .max()
        .unwrap();
    stream.confirm(wal_end);
    let retained_ok = wait_until(Duration::from_secs(20), async || {
        let (confirmed, retained) = confirmed_and_retained(&db, &pg.slot, wal_end).await;
        confirmed >= wal_end && retained < 16 << 20
    })
    .await;
    let (confirmed, retained) = confirmed_and_retained(&db, &pg.slot, wal_end).await;
    stream.close().await;
    assert!(
        retained_ok,
        "slot confirmed {confirmed} (keepalive WAL end {wal_end}) and retains {retained} bytes"
    );
}
