//! Column rules and table renames end to end against MariaDB and Postgres: a column excluded,
//! one masked with the group's salt, one renamed and a table renamed by `table_names` look the
//! same in rows copied by the snapshot and in rows streamed afterwards; a rule excluding a key
//! column sets its table aside with an error naming source, table and column.

mod support;

use std::time::Duration;

use sha2::{Digest, Sha256};
use support::pipeline::{CONVERGE, MysqlSetup, Warehouse, fresh_warehouse, poll};

/// The salt the test gives tidemark through the environment.
const SALT: &str = "test-salt-Xq7!never-printed";

/// The masked form of `value`: lowercase hex SHA-256 of the salt followed by the value.
fn masked(value: &str) -> String {
    let digest = Sha256::digest([SALT.as_bytes(), value.as_bytes()].concat());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The columns of `schema.table` without tidemark's metadata columns.
async fn data_columns(wh: &Warehouse, schema: &str, table: &str) -> Vec<String> {
    wh.column_types(schema, table)
        .await
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| !name.starts_with("_tidemark_"))
        .collect()
}

/// Waits until `sql` returns `expected` in the warehouse.
async fn wait_rows(s: &mut MysqlSetup, sql: &str, expected: &[Vec<Option<String>>]) {
    let result = poll(CONVERGE, async || {
        s.tm.assert_running("waiting for rows");
        let rows = support::warehouse::pg_rows(&s.wh.client, sql).await?;
        if rows == expected {
            Ok(())
        } else {
            Err(format!("{rows:?}"))
        }
    })
    .await;
    if let Err(last) = result {
        panic!("{sql}: expected {expected:?}, last saw {last}");
    }
}

fn row(values: &[Option<&str>]) -> Vec<Option<String>> {
    values.iter().map(|v| v.map(str::to_owned)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_masked_and_renamed_columns_look_the_same_copied_and_streamed() {
    let ddl = [
        "CREATE TABLE customers (id INT PRIMARY KEY, email VARCHAR(100), ssn VARCHAR(20), \
         nm VARCHAR(50), note TEXT) CHARACTER SET utf8mb4",
        "CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT, amt DECIMAL(10,2))",
        "CREATE TABLE keyless_by_rule (id INT PRIMARY KEY, v INT)",
        "INSERT INTO customers VALUES (1, 'ann@example.com', '111-11-1111', 'Ann', 'vip'), \
         (2, NULL, '222-22-2222', 'Bob', NULL), (3, 'cy@example.com', NULL, 'Cy', 'x')",
        "INSERT INTO orders VALUES (10, 1, 12.50), (11, 2, 3.00)",
        "INSERT INTO keyless_by_rule VALUES (1, 1)",
    ];
    let wh = fresh_warehouse("colrules").await;
    let mut s = MysqlSetup::prepare(wh, "colrules", "colrules", &ddl, |g| {
        g.group_extra = "mask_salt = \"${TIDEMARK_MASK_SALT}\"\n".into();
        let source = &mut g.sources[0];
        source.snapshot = "initial";
        let db = source.include[0].trim_end_matches(".*").to_owned();
        source.extra.push_str(&format!(
            "\n[sources.table_names]\n\"{db}.orders\" = \"Sales_Orders\"\n\
             \n[[sources.columns]]\ntable = \"{db}.customers\"\ncolumn = \"ssn\"\naction = \"exclude\"\n\
             \n[[sources.columns]]\ntable = \"{db}.cust*\"\ncolumn = \"email\"\naction = \"mask\"\n\
             \n[[sources.columns]]\ntable = \"{db}.*\"\ncolumn = \"nm\"\naction = \"rename\"\nto = \"name\"\n\
             \n[[sources.columns]]\ntable = \"{db}.keyless_by_rule\"\ncolumn = \"i?\"\naction = \"exclude\"\n"
        ));
    })
    .await;
    s.tm.extra_env
        .push(("TIDEMARK_MASK_SALT".into(), SALT.into()));
    s.run().await;
    let schema = s.schema.clone();
    let customers =
        format!("SELECT id::text, email, name, note FROM \"{schema}\".customers ORDER BY id");
    let orders = format!(
        "SELECT id::text, customer_id::text, amt::text FROM \"{schema}\".sales_orders ORDER BY id"
    );

    // The copy.
    let ann = masked("ann@example.com");
    let cy = masked("cy@example.com");
    wait_rows(
        &mut s,
        &customers,
        &[
            row(&[Some("1"), Some(&ann), Some("Ann"), Some("vip")]),
            row(&[Some("2"), None, Some("Bob"), None]),
            row(&[Some("3"), Some(&cy), Some("Cy"), Some("x")]),
        ],
    )
    .await;
    wait_rows(
        &mut s,
        &orders,
        &[
            row(&[Some("10"), Some("1"), Some("12.50")]),
            row(&[Some("11"), Some("2"), Some("3.00")]),
        ],
    )
    .await;

    // Streamed inserts, updates (of a masked value, a renamed one, to NULL) and deletes.
    s.exec(&[
        "INSERT INTO customers VALUES (4, 'dee@example.com', '444-44-4444', 'Dee', NULL)",
        "UPDATE customers SET email = 'bob@example.com', ssn = '999' WHERE id = 2",
        "UPDATE customers SET nm = 'Ann B', email = NULL WHERE id = 1",
        "DELETE FROM customers WHERE id = 3",
        "INSERT INTO orders VALUES (12, 4, 99.99)",
        "UPDATE orders SET amt = 4.00 WHERE id = 11",
        "DELETE FROM orders WHERE id = 10",
        "INSERT INTO keyless_by_rule VALUES (2, 2)",
    ])
    .await;
    let bob = masked("bob@example.com");
    let dee = masked("dee@example.com");
    wait_rows(
        &mut s,
        &customers,
        &[
            row(&[Some("1"), None, Some("Ann B"), Some("vip")]),
            row(&[Some("2"), Some(&bob), Some("Bob"), None]),
            row(&[Some("4"), Some(&dee), Some("Dee"), None]),
        ],
    )
    .await;
    wait_rows(
        &mut s,
        &orders,
        &[
            row(&[Some("11"), Some("2"), Some("4.00")]),
            row(&[Some("12"), Some("4"), Some("99.99")]),
        ],
    )
    .await;

    // Exactly the expected columns: ssn never reached the warehouse, nm is name, email is text.
    assert_eq!(
        data_columns(&s.wh, &schema, "customers").await,
        ["id", "email", "name", "note"]
    );
    let types = s.wh.column_types(&schema, "customers").await;
    let email_type = types
        .iter()
        .find(|(n, _)| n == "email")
        .map(|(_, t)| t.as_str());
    assert!(
        email_type.is_some_and(|t| t == "text" || t.starts_with("character varying")),
        "masked column type: {email_type:?}"
    );
    assert_eq!(s.wh.primary_key(&schema, "customers").await, ["id"]);
    // The table rename: orders lands in sales_orders (lowercased) and nowhere else.
    assert!(!s.wh.table_exists(&schema, "orders").await);
    assert_eq!(
        data_columns(&s.wh, &schema, "sales_orders").await,
        ["id", "customer_id", "amt"]
    );

    // A rule excluding a key column: the table is set aside with the error naming source,
    // table and column, never loaded without its key; the other tables stream on.
    assert!(!s.wh.table_exists(&schema, "keyless_by_rule").await);
    let logs = s.tm.stderr();
    let table = format!("{}.keyless_by_rule", s.db);
    assert!(
        logs.lines().any(|l| l.contains("table set aside")
            && l.contains(&format!("source colrules, table {table}"))
            && l.contains("excludes key column `id`")),
        "no set-aside error naming the key column in:\n{logs}"
    );
    // The salt is a secret: never in the logs.
    assert!(!logs.contains(SALT), "the salt was logged");
    s.tm.terminate(Duration::from_secs(30)).await;
}
