//! `tidemark import dms-rules` end to end: a realistic DMS table mapping (schema renamed into
//! a `TENANT_REGION_FUNCTION` staging schema, excluded tables, a renamed table, a removed
//! column, a renamed column, and one rule tidemark cannot express) is imported, the fragment
//! becomes the config of a MariaDB source, and the rows land where DMS would have put them.

mod support;

use std::process::Command;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::pipeline::{
    CONVERGE, GroupConfig, Tidemark, fresh_warehouse, poll, server_id, toml_str, wait_checkpoint,
};

/// The fixture's source database, replaced by the test's own.
const FIXTURE_SCHEMA: &str = "\"schema-name\": \"shop\"";

/// Source rows of `sql` as text.
async fn source_rows(conn: &mut mysql_async::Conn, sql: &str) -> Vec<Vec<Option<String>>> {
    let rows: Vec<mysql_async::Row> = conn.query(sql).await.unwrap();
    rows.into_iter()
        .map(|row| {
            (0..row.len())
                .map(|i| row.get::<Option<String>, _>(i).flatten())
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_dms_rules_route_rows_where_dms_would() {
    let (mut conn, db) = support::fresh_mysql_database("dms_import").await;
    for sql in [
        "CREATE TABLE Customer (id INT PRIMARY KEY, name VARCHAR(50), email VARCHAR(100), \
         card_number VARCHAR(19)) CHARACTER SET utf8mb4",
        "CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT, amt DECIMAL(10,2))",
        "CREATE TABLE items (id INT PRIMARY KEY, sku VARCHAR(20))",
        "CREATE TABLE tmp_import (id INT PRIMARY KEY, x INT)",
        "CREATE TABLE audit_log (id INT PRIMARY KEY, msg VARCHAR(100))",
        "INSERT INTO Customer VALUES (1, 'Ann', 'ann@example.com', '4111111111111111'), \
         (2, 'Bob', NULL, '5500000000000004')",
        "INSERT INTO orders VALUES (10, 1, 12.50), (11, 2, 3.00)",
        "INSERT INTO items VALUES (1, 'SKU-1')",
        "INSERT INTO tmp_import VALUES (1, 1)",
        "INSERT INTO audit_log VALUES (1, 'created')",
    ] {
        conn.query_drop(sql).await.unwrap();
    }

    // The DMS task's rules, on this test's database instead of `shop`.
    let fixture =
        std::fs::read_to_string(support::repo_root().join("tests/fixtures/dms-acme-in-txn.json"))
            .unwrap();
    assert!(fixture.contains(FIXTURE_SCHEMA));
    let rules = fixture.replace(FIXTURE_SCHEMA, &format!("\"schema-name\": \"{db}\""));
    let dir = tempfile::tempdir().unwrap();
    let rules_path = dir.path().join("dms.json");
    std::fs::write(&rules_path, rules).unwrap();

    let import = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["import", "dms-rules", "--source-id", "dms-acme"])
        .arg(&rules_path)
        .output()
        .unwrap();
    let fragment = String::from_utf8(import.stdout).unwrap();
    let stderr = String::from_utf8(import.stderr).unwrap();
    // One rule (add-column) cannot be expressed: exit 1, named on stderr and in the fragment.
    assert_eq!(import.status.code(), Some(1), "{stderr}\n{fragment}");
    assert!(
        stderr.contains("rule 9 (\"add-load-ts\"): not expressed: add-column"),
        "{stderr}"
    );
    assert!(
        fragment.contains("#   rule 9 (\"add-load-ts\"): add-column"),
        "{fragment}"
    );
    assert!(
        fragment.contains("target_schema = \"acme_in_txn\""),
        "{fragment}"
    );

    // The fragment with the source's connection keys is the source of a group.
    let wh = fresh_warehouse("dms_import").await;
    let connection = format!(
        "id = \"dms-acme\"\nkind = \"mysql\"\nurl = {}\ntenant = \"acme\"\nregion = \"in\"\n\
         function = \"txn\"\nsnapshot = \"initial\"\nserver_id = {}\nheartbeat = \"1s\"\n",
        toml_str(&support::mysql_url()),
        server_id()
    );
    assert!(fragment.contains("id = \"dms-acme\"\n"));
    let source = fragment.replacen("id = \"dms-acme\"\n", &connection, 1);
    let group = GroupConfig::new(&wh.url, Vec::new());
    let mut tm = Tidemark::prepare(|state| format!("{}\n{source}", group.render(state)));
    tm.spawn();
    wait_checkpoint(&mut tm, &wh, "dms-acme", Duration::from_secs(30)).await;

    // Streamed changes after the copy.
    for sql in [
        "INSERT INTO Customer VALUES (3, 'Cy', 'cy@example.com', '340000000000009')",
        "UPDATE Customer SET email = 'bob@example.com', card_number = '1' WHERE id = 2",
        "DELETE FROM Customer WHERE id = 1",
        "INSERT INTO orders VALUES (12, 3, 7.25)",
        "UPDATE orders SET amt = 4.00 WHERE id = 11",
        "INSERT INTO items VALUES (2, 'SKU-2')",
        "INSERT INTO tmp_import VALUES (2, 2)",
        "INSERT INTO audit_log VALUES (2, 'updated')",
    ] {
        conn.query_drop(sql).await.unwrap();
    }

    // Where DMS puts them: schema acme_in_txn; Customer as customers without card_number;
    // orders with amt as total; items as is; tmp_import and audit_log nowhere.
    let pairs = [
        (
            "SELECT CAST(id AS CHAR), name, email FROM Customer ORDER BY id",
            "SELECT id::text, name, email FROM acme_in_txn.customers ORDER BY id",
        ),
        (
            "SELECT CAST(id AS CHAR), CAST(customer_id AS CHAR), CAST(amt AS CHAR) FROM orders ORDER BY id",
            "SELECT id::text, customer_id::text, total::text FROM acme_in_txn.orders ORDER BY id",
        ),
        (
            "SELECT CAST(id AS CHAR), sku FROM items ORDER BY id",
            "SELECT id::text, sku FROM acme_in_txn.items ORDER BY id",
        ),
    ];
    for (source_sql, target_sql) in pairs {
        let expected = source_rows(&mut conn, source_sql).await;
        let result = poll(CONVERGE, async || {
            tm.assert_running("waiting for the imported routes");
            let rows = support::warehouse::pg_rows(&wh.client, target_sql).await?;
            if rows == expected {
                Ok(())
            } else {
                Err(format!("{rows:?}"))
            }
        })
        .await;
        if let Err(last) = result {
            panic!("{target_sql}: expected {expected:?}, last saw {last}");
        }
    }
    let tables: Vec<String> = wh
        .rows(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'acme_in_txn' \
             ORDER BY table_name",
        )
        .await
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect();
    assert_eq!(tables, ["customers", "items", "orders"]);
    let columns: Vec<String> = wh
        .column_types("acme_in_txn", "customers")
        .await
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| !name.starts_with("_tidemark_"))
        .collect();
    assert_eq!(columns, ["id", "name", "email"], "card_number removed");
    tm.terminate(Duration::from_secs(30)).await;
}
