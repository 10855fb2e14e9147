//! `tidemark check` for Postgres sources against the real dev Postgres 15: tables whose changes
//! cannot be applied, publications that miss tables, slots and roles are reported with the
//! statement that fixes them, and passwords never show.

mod support;

use support::pg_source::validated_pg_source;
use support::pipeline::{Warehouse, fresh_warehouse, with_database};
use tidemark::check::{CheckReport, CheckStatus};
use tidemark::config::SourceConfig;
use tidemark::source::postgres::check::check_postgres_source;

/// A validated Postgres source reading `url`, including `shop.*`, with its own slot and
/// publication names.
fn source(url: &str, names: &str) -> SourceConfig {
    validated_pg_source("check-test", url, names)
}

/// A source database with the tables every case uses: a keyed table, a keyless one, one with
/// REPLICA IDENTITY FULL, and one outside `include`.
async fn source_database(hint: &str) -> Warehouse {
    let db = fresh_warehouse(hint).await;
    db.client
        .batch_execute(
            "CREATE SCHEMA shop; CREATE SCHEMA other;
             CREATE TABLE shop.orders (id bigint PRIMARY KEY, v text);
             CREATE TABLE shop.notes (body text);
             CREATE TABLE shop.audit (at timestamptz, what text);
             ALTER TABLE shop.audit REPLICA IDENTITY FULL;
             CREATE TABLE other.skip (id int PRIMARY KEY);",
        )
        .await
        .unwrap();
    db
}

fn status(report: &CheckReport, item: &str) -> CheckStatus {
    report
        .item(item)
        .unwrap_or_else(|| panic!("no item `{item}` in:\n{report}"))
        .status
}

fn fix(report: &CheckReport, item: &str) -> String {
    report
        .item(item)
        .and_then(|i| i.fix.clone())
        .unwrap_or_else(|| panic!("no fix for `{item}` in:\n{report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gap_is_reported_with_its_fix_until_the_source_is_ready() {
    let db = source_database("pgchk_ready").await;
    let names = db.db.replace('-', "_").to_lowercase();
    let source = source(&db.url, &names);
    let pg = source.postgres().expect("a Postgres source");
    let (slot, publication) = (pg.slot.clone(), pg.publication.clone());

    let report = check_postgres_source(&source).await;
    // A table that cannot identify its rows is left out by `run` (loudly), not a reason to
    // refuse the whole source.
    assert!(report.passed(), "{report}");
    assert_eq!(status(&report, "connection"), CheckStatus::Pass);
    assert_eq!(status(&report, "wal_level"), CheckStatus::Pass, "{report}");
    assert_eq!(status(&report, "privilege REPLICATION"), CheckStatus::Pass);
    assert_eq!(status(&report, "replica identity"), CheckStatus::Warn);
    assert_eq!(
        status(&report, "replica identity shop.notes"),
        CheckStatus::Warn
    );
    assert!(
        fix(&report, "replica identity shop.notes")
            .contains("ALTER TABLE shop.notes REPLICA IDENTITY FULL;"),
        "{report}"
    );
    assert!(
        report.item("replica identity shop.audit").is_none()
            && report.item("replica identity other.skip").is_none(),
        "only the keyless, identity-less included table is a problem:\n{report}"
    );
    // A superuser may create both at first start.
    assert_eq!(
        status(&report, &format!("publication {publication}")),
        CheckStatus::Info
    );
    assert_eq!(status(&report, &format!("slot {slot}")), CheckStatus::Info);

    // A publication that misses tables.
    db.client
        .batch_execute(&format!(
            "ALTER TABLE shop.notes REPLICA IDENTITY FULL;
             CREATE PUBLICATION {publication} FOR TABLE shop.orders;"
        ))
        .await
        .unwrap();
    let report = check_postgres_source(&source).await;
    assert_eq!(status(&report, "replica identity"), CheckStatus::Pass);
    let item = format!("publication {publication}");
    // The check's user owns publication and tables: `tidemark run` would add them itself.
    assert_eq!(status(&report, &item), CheckStatus::Warn, "{report}");
    assert!(
        report
            .item(&item)
            .unwrap()
            .detail
            .contains("tidemark adds them at its next start"),
        "{report}"
    );
    let add = fix(&report, &item);
    assert_eq!(
        add,
        format!("ALTER PUBLICATION {publication} ADD TABLE shop.audit, shop.notes;")
    );

    // Apply the fix as printed, create the slot: ready.
    db.client.batch_execute(&add).await.unwrap();
    db.client
        .batch_execute(&format!(
            "SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"
        ))
        .await
        .unwrap();
    let report = check_postgres_source(&source).await;
    let slot_item = report.item(&format!("slot {slot}")).unwrap().clone();
    db.client
        .batch_execute(&format!("SELECT pg_drop_replication_slot('{slot}')"))
        .await
        .unwrap();
    assert!(report.passed(), "{report}");
    assert_eq!(slot_item.status, CheckStatus::Pass, "{report}");
    assert!(
        slot_item.detail.contains("wal_status reserved"),
        "{slot_item:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_role_is_told_what_to_grant_and_its_password_never_shows() {
    let db = source_database("pgchk_role").await;
    let names = db.db.replace('-', "_").to_lowercase();
    let role = format!("{names}_u");
    let password = "Pg-Check-Secret-77";
    db.client
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{password}';
             GRANT USAGE ON SCHEMA shop TO {role};
             GRANT SELECT ON shop.orders TO {role};"
        ))
        .await
        .unwrap();
    let url = with_database(&support::pg_url(), &db.db).replacen(
        "://postgres@",
        &format!("://{role}:{password}@"),
        1,
    );
    let source = source(&url, &names);
    let pg = source.postgres().expect("a Postgres source");

    let report = check_postgres_source(&source).await;
    let text = report.to_string();
    // A publication someone else owns, lacking included tables: this role may not add them.
    db.client
        .batch_execute(&format!(
            "CREATE PUBLICATION {} FOR TABLE shop.orders",
            pg.publication
        ))
        .await
        .unwrap();
    let lacking = check_postgres_source(&source).await;
    db.client
        .batch_execute(&format!(
            "DROP PUBLICATION {}; DROP OWNED BY {role}; DROP ROLE {role};",
            pg.publication
        ))
        .await
        .unwrap();
    let item = format!("publication {}", pg.publication);
    assert_eq!(status(&lacking, &item), CheckStatus::Fail, "{lacking}");
    assert!(
        lacking
            .item(&item)
            .unwrap()
            .detail
            .contains("tidemark does not add them"),
        "{lacking}"
    );
    assert!(!text.contains(password), "password in the report:\n{text}");
    assert_eq!(
        status(&report, "privilege REPLICATION"),
        CheckStatus::Fail,
        "{text}"
    );
    assert_eq!(
        fix(&report, "privilege REPLICATION"),
        format!("ALTER ROLE {role} WITH REPLICATION;")
    );
    // Not the tables' owner: it cannot create the publication itself. The keyless shop.notes is
    // left out: published, the source would refuse its updates and deletes.
    let publication = format!("publication {}", pg.publication);
    assert_eq!(status(&report, &publication), CheckStatus::Fail, "{text}");
    assert!(
        fix(&report, &publication).starts_with(&format!(
            "as the tables' owner: CREATE PUBLICATION {} FOR TABLE shop.audit, shop.orders;",
            pg.publication
        )),
        "{text}"
    );
    assert_eq!(status(&report, "privilege SELECT"), CheckStatus::Warn);
    assert!(
        fix(&report, "privilege SELECT").starts_with(&format!(
            "GRANT SELECT ON shop.audit, shop.notes TO {role};"
        )),
        "{text}"
    );
}
