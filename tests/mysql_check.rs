//! `tidemark check` for MySQL/MariaDB sources against real private MariaDB servers: every unmet
//! prerequisite is reported with the statement that fixes it, and passwords never show.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use mysql_async::prelude::Queryable;
use tidemark::config::{Config, SourceConfig};
use tidemark::source::mysql::check::{CheckReport, CheckStatus, check_mysql_source};

/// A validated source reading `url` with the given include patterns.
fn source(url: &str, include: &[&str]) -> SourceConfig {
    let include: Vec<String> = include.iter().map(|p| format!("{p:?}")).collect();
    let text = format!(
        r#"[group]
name = "check-test"
[warehouse]
kind = "postgres"
url = "postgres://unused@127.0.0.1:1/warehouse"
[[sources]]
id = "check-test"
kind = "mysql"
url = "${{SOURCE_URL}}"
tenant = "t"
region = "r"
function = "f"
include = [{}]
snapshot = "never"
"#,
        include.join(", ")
    );
    let env = |name: &str| (name == "SOURCE_URL").then(|| url.to_string());
    let config = Config::from_str_with_env(&text, Path::new("mysql_check.toml"), &env)
        .unwrap_or_else(|e| panic!("{e}"));
    config.sources.into_iter().next().unwrap()
}

/// `mysql://root@HOST:PORT` -> `mysql://USER:PASSWORD@HOST:PORT`.
fn url_as(root_url: &str, user: &str, password: &str) -> String {
    let host = root_url.rsplit('@').next().unwrap();
    format!("mysql://{user}:{password}@{host}")
}

/// A user name unique to this test process and call (tests share one server).
fn unique_user(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "chk{}_{}_{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates `user`@`%` with `password` and runs each `GRANT ... TO {user}` statement.
async fn create_user(user: &str, password: &str, grants: &[&str]) {
    let mut admin = support::mysql_conn(&support::mysql_url()).await;
    admin
        .query_drop(format!("DROP USER IF EXISTS '{user}'@'%'"))
        .await
        .unwrap();
    admin
        .query_drop(format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"
        ))
        .await
        .unwrap();
    for grant in grants {
        admin
            .query_drop(format!("{grant} TO '{user}'@'%'"))
            .await
            .unwrap_or_else(|e| panic!("{grant}: {e}"));
    }
    admin.disconnect().await.ok();
}

async fn drop_user(user: &str) {
    let mut admin = support::mysql_conn(&support::mysql_url()).await;
    admin
        .query_drop(format!("DROP USER IF EXISTS '{user}'@'%'"))
        .await
        .ok();
    admin.disconnect().await.ok();
}

fn assert_status(report: &CheckReport, name: &str, status: CheckStatus) {
    let item = report
        .item(name)
        .unwrap_or_else(|| panic!("no item {name} in\n{report}"));
    assert_eq!(item.status, status, "{name} in\n{report}");
}

fn fix_of<'a>(report: &'a CheckReport, name: &str) -> &'a str {
    report
        .item(name)
        .and_then(|i| i.fix.as_deref())
        .unwrap_or_else(|| panic!("no fix for {name} in\n{report}"))
}

#[tokio::test]
async fn well_configured_server_passes_every_check() {
    let (conn, db) = support::fresh_mysql_database("check_ok").await;
    conn.disconnect().await.ok();
    let report = check_mysql_source(&source(&support::mysql_url(), &[&format!("{db}.*")])).await;
    assert!(report.passed(), "{report}");
    let not_ok: Vec<_> = report
        .items
        .iter()
        .filter(|i| matches!(i.status, CheckStatus::Fail | CheckStatus::Warn))
        .collect();
    assert!(not_ok.is_empty(), "{report}");
    for name in [
        "connection",
        "log_bin",
        "binlog_format",
        "binlog_row_image",
        "binlog_row_metadata",
        "log_bin_compress",
        "binlog_checksum",
        "binlog_retention",
        "server_id",
        "privilege REPLICATION SLAVE",
        "privilege BINLOG MONITOR",
        "privilege SELECT",
    ] {
        assert_status(&report, name, CheckStatus::Pass);
    }
    assert_status(&report, "gtid", CheckStatus::Info);
    assert!(report.to_string().contains("ready"), "{report}");
}

#[tokio::test]
async fn misconfigured_server_lists_each_failure_with_its_fix() {
    let server = support::mariadb_instance(
        "check-misconfigured",
        &[
            "--binlog-format=STATEMENT",
            "--binlog-row-metadata=MINIMAL",
            "--log-bin-compress=ON",
        ],
    );
    let url = server.url();
    let report = check_mysql_source(&source(url, &["shop.*"])).await;
    assert!(!report.passed(), "{report}");
    let text = report.to_string();
    for (name, fix) in [
        ("binlog_format", "SET GLOBAL binlog_format = 'ROW';"),
        (
            "binlog_row_metadata",
            "SET GLOBAL binlog_row_metadata = 'FULL';",
        ),
        ("log_bin_compress", "SET GLOBAL log_bin_compress = OFF;"),
    ] {
        assert_status(&report, name, CheckStatus::Fail);
        assert!(fix_of(&report, name).starts_with(fix), "{report}");
        assert!(text.contains(fix), "{text}");
    }
    // Settings left at the script's defaults still pass.
    assert_status(&report, "log_bin", CheckStatus::Pass);
    assert_status(&report, "binlog_row_image", CheckStatus::Pass);
    assert_status(&report, "privilege REPLICATION SLAVE", CheckStatus::Pass);
    assert!(text.contains("NOT READY"), "{text}");
}

#[tokio::test]
async fn select_only_user_gets_grant_statements_naming_it() {
    let (conn, db) = support::fresh_mysql_database("check_sel").await;
    conn.disconnect().await.ok();
    let user = unique_user("sel");
    let password = format!("Sel-{}-pw", std::process::id());
    create_user(&user, &password, &[&format!("GRANT SELECT ON `{db}`.*")]).await;
    let missing_db = format!("{db}_nogrant");

    let url = url_as(&support::mysql_url(), &user, &password);
    let report = check_mysql_source(&source(
        &url,
        &[&format!("{db}.*"), &format!("{missing_db}.*")],
    ))
    .await;
    drop_user(&user).await;

    assert!(!report.passed(), "{report}");
    assert_status(&report, "connection", CheckStatus::Pass);
    assert_status(&report, "privilege REPLICATION SLAVE", CheckStatus::Fail);
    assert_eq!(
        fix_of(&report, "privilege REPLICATION SLAVE"),
        format!("GRANT REPLICATION SLAVE ON *.* TO '{user}'@'%';")
    );
    assert_status(&report, "privilege BINLOG MONITOR", CheckStatus::Fail);
    assert_eq!(
        fix_of(&report, "privilege BINLOG MONITOR"),
        format!("GRANT BINLOG MONITOR ON *.* TO '{user}'@'%';")
    );
    assert_status(
        &report,
        &format!("privilege SELECT on {db}"),
        CheckStatus::Pass,
    );
    let select_missing = format!("privilege SELECT on {missing_db}");
    assert_status(&report, &select_missing, CheckStatus::Fail);
    assert_eq!(
        fix_of(&report, &select_missing),
        format!("GRANT SELECT ON `{missing_db}`.* TO '{user}'@'%';")
    );
    let shown = format!("{report} {report:?}");
    assert!(!shown.contains(&password), "{shown}");
    assert!(!shown.contains("IDENTIFIED BY PASSWORD"), "{shown}");
}

#[tokio::test]
async fn replication_user_with_the_documented_grants_passes() {
    let (conn, db) = support::fresh_mysql_database("check_repl").await;
    conn.disconnect().await.ok();
    let user = unique_user("repl");
    let password = format!("Repl-{}-pw", std::process::id());
    create_user(
        &user,
        &password,
        &[
            "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.*",
            &format!("GRANT SELECT ON `{db}`.*"),
        ],
    )
    .await;
    let url = url_as(&support::mysql_url(), &user, &password);
    let report = check_mysql_source(&source(&url, &[&format!("{db}.*")])).await;
    drop_user(&user).await;
    assert!(report.passed(), "{report}");
    assert_status(&report, "privilege REPLICATION SLAVE", CheckStatus::Pass);
    assert_status(&report, "privilege BINLOG MONITOR", CheckStatus::Pass);
    assert_status(
        &report,
        &format!("privilege SELECT on {db}"),
        CheckStatus::Pass,
    );
}

#[tokio::test]
async fn wrong_password_is_a_clear_failure_that_never_shows_the_password() {
    let user = unique_user("pw");
    create_user(&user, "the-right-one", &["GRANT REPLICATION SLAVE ON *.*"]).await;
    let wrong = format!("Wr0ng-{}-secret", std::process::id());
    let url = url_as(&support::mysql_url(), &user, &wrong);
    let source = source(&url, &["shop.*"]);
    let report = check_mysql_source(&source).await;
    drop_user(&user).await;

    assert!(!report.passed(), "{report}");
    assert_eq!(report.items.len(), 1, "{report}");
    assert_status(&report, "connection", CheckStatus::Fail);
    let item = &report.items[0];
    assert!(item.detail.contains("Access denied"), "{report}");
    assert!(
        item.fix.as_deref().unwrap_or("").contains("password"),
        "{report}"
    );
    let shown = format!("{report} {report:?} {source:?}");
    assert!(!shown.contains(&wrong), "{shown}");
    assert!(shown.contains(&format!("mysql://{user}:***@")), "{shown}");
}

#[tokio::test]
async fn unreachable_server_is_a_clear_failure() {
    let secret = format!("Unreach-{}-secret", std::process::id());
    // Port 1 on loopback: nothing listens there.
    let report = check_mysql_source(&source(
        &format!("mysql://repl:{secret}@127.0.0.1:1"),
        &["shop.*"],
    ))
    .await;
    assert!(!report.passed(), "{report}");
    assert_status(&report, "connection", CheckStatus::Fail);
    assert!(report.items[0].detail.contains("cannot reach"), "{report}");
    assert!(report.items[0].fix.is_some(), "{report}");
    assert!(
        !format!("{report} {report:?}").contains(&secret),
        "{report}"
    );
}
