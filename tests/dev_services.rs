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

/// Everything on disk that belongs to `server`: its directory and, when its PostgreSQL files
/// live behind the `pg` link (the postgres user cannot enter the state dir), the link's target.
fn files_of(server: &support::PrivateServer) -> Vec<std::path::PathBuf> {
    let dir = server.dir();
    assert!(
        dir.is_dir(),
        "{} missing while its server runs",
        dir.display()
    );
    let linked = std::fs::canonicalize(dir.join("pg")).ok();
    std::iter::once(dir).chain(linked).collect()
}

/// Panics unless nothing answers on `url` any more and none of `files` exists.
fn assert_gone(url: &str, files: &[std::path::PathBuf]) {
    assert!(
        !support::accepts_tcp(url),
        "{url} still accepts connections"
    );
    for path in files {
        assert!(!path.exists(), "{} was left behind", path.display());
    }
}

#[test]
fn dropped_private_servers_are_stopped_and_their_data_deleted() {
    for server in [
        support::mariadb_instance("guard-drop", &[]),
        support::postgres_instance("guard-drop", &[]),
    ] {
        let url = server.url().to_string();
        assert!(support::accepts_tcp(&url), "{url} does not answer");
        let files = files_of(&server);
        drop(server);
        assert_gone(&url, &files);
    }
}

#[test]
fn a_private_server_is_removed_even_when_its_test_panics() {
    let (sent, received) = std::sync::mpsc::channel();
    let test = std::thread::spawn(move || {
        let server = support::postgres_instance("guard-panic", &[]);
        sent.send((server.url().to_string(), files_of(&server)))
            .unwrap();
        panic!("the test fails while its server runs");
    });
    assert!(test.join().is_err(), "the thread did not panic");
    let (url, files) = received.recv().unwrap();
    assert_gone(&url, &files);
}

#[tokio::test]
async fn a_stopped_private_server_starts_again_on_its_port_with_its_data() {
    let server = support::mariadb_instance("guard-restart", &["--binlog-format=MIXED"]);
    let mut conn = support::mysql_conn(server.url()).await;
    conn.query_drop("CREATE DATABASE kept").await.unwrap();
    conn.disconnect().await.unwrap();

    server.stop();
    assert!(!support::accepts_tcp(server.url()), "stop left it running");
    assert_eq!(server.start_again(), server.url(), "the port changed");

    let mut conn = support::mysql_conn(server.url()).await;
    let kept: Option<String> = conn
        .query_first("SHOW DATABASES LIKE 'kept'")
        .await
        .unwrap();
    assert_eq!(kept.as_deref(), Some("kept"), "the data was lost");
    assert_eq!(global_variable(&mut conn, "binlog_format").await, "MIXED");
    conn.disconnect().await.unwrap();
}

#[test]
fn instances_left_by_killed_test_processes_are_removed_by_the_next_guard() {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    // Named as the guard of a test process (that pid) killed before its guard could drop.
    let orphan = format!("t{}_0_orphan", child.id());
    let script = support::repo_root().join("scripts/postgres-instance.sh");
    let out = std::process::Command::new(&script)
        .arg(&orphan)
        .env("TIDEMARK_DEV_DIR", support::state_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let files = [support::state_dir().join("postgres").join(&orphan)];

    let _next = support::postgres_instance("sweeper", &[]);
    assert_gone(&url, &files);
}
