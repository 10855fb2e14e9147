//! The private test servers are configured the way tidemark's tests assume:
//! a MariaDB binlog a CDC reader can decode on its own, deliberately
//! misconfigured instances on demand, and isolated databases per test.

mod support;

use mysql_async::prelude::Queryable;

/// Reads one global variable of the server behind `conn`.
async fn global_variable(conn: &mut mysql_async::Conn, name: &str) -> String {
    let row: Option<(String, String)> = conn
        .query_first(format!("SHOW GLOBAL VARIABLES LIKE '{name}'"))
        .await
        .unwrap_or_else(|e| panic!("SHOW GLOBAL VARIABLES LIKE '{name}': {e}"));
    row.unwrap_or_else(|| panic!("server has no variable {name}"))
        .1
}

#[tokio::test]
async fn private_mariadb_writes_full_row_binlog() {
    let mut conn = support::mysql_conn(&support::mysql_url()).await;
    for (name, expected) in [
        ("log_bin", "ON"),
        ("binlog_format", "ROW"),
        ("binlog_row_image", "FULL"),
        ("binlog_row_metadata", "FULL"),
        ("binlog_checksum", "CRC32"),
    ] {
        assert_eq!(global_variable(&mut conn, name).await, expected, "{name}");
    }
    conn.disconnect().await.unwrap();
}

#[tokio::test]
async fn misconfigured_instance_reports_statement_format() {
    let server = support::mariadb_instance("misconfigured", &["--binlog-format=STATEMENT"]);
    let url = server.url();
    assert_ne!(
        url,
        support::mysql_url(),
        "a named instance is a separate server"
    );
    let mut conn = support::mysql_conn(url).await;
    assert_eq!(
        global_variable(&mut conn, "binlog_format").await,
        "STATEMENT"
    );
    conn.disconnect().await.unwrap();
}

#[tokio::test]
async fn fresh_databases_are_distinct_and_isolated() {
    let (mut first, first_db) = support::fresh_mysql_database("distinct").await;
    let (mut second, second_db) = support::fresh_mysql_database("distinct").await;
    assert_ne!(first_db, second_db);

    let current: Option<String> = first.query_first("SELECT DATABASE()").await.unwrap();
    assert_eq!(current.as_deref(), Some(first_db.as_str()));
    let current: Option<String> = second.query_first("SELECT DATABASE()").await.unwrap();
    assert_eq!(current.as_deref(), Some(second_db.as_str()));

    first
        .query_drop("CREATE TABLE only_here (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let tables: Vec<String> = second.query("SHOW TABLES").await.unwrap();
    assert!(tables.is_empty(), "{second_db} sees {tables:?}");

    first.disconnect().await.unwrap();
    second.disconnect().await.unwrap();
}

#[test]
fn postgres_and_s3_servers_answer_on_loopback() {
    for url in [support::pg_url(), support::s3_url()] {
        assert!(url.contains("127.0.0.1:"), "{url} is not a loopback URL");
        let authority = url.split("://").nth(1).unwrap().split('/').next().unwrap();
        let addr = authority.rsplit('@').next().unwrap();
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{url}: {e}"));
    }
}
