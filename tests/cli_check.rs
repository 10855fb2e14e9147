//! `tidemark check` as an operator runs it: exit codes, messages, and no secrets in output.

mod support;

use std::process::{Command, Output};

use mysql_async::prelude::Queryable;

fn write_config(dir: &std::path::Path, url_env: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("tidemark.toml");
    let text = format!(
        r#"[group]
name = "cli-test"
state_dir = "{state}"

[warehouse]
kind = "postgres"
url = "postgres://tidemark@127.0.0.1:1/warehouse"

[[sources]]
id = "shop"
kind = "mysql"
url = "${{{url_env}}}"
tenant = "acme"
region = "in"
function = "txn"
snapshot = "never"
{extra}
"#,
        state = dir.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn check(config: &std::path::Path, env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    cmd.args(["check", "--config"]).arg(config);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running tidemark")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn unknown_key_exits_2_naming_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "SRC_URL", "colour = \"blue\"");
    let out = check(&path, &[("SRC_URL", "mysql://u@127.0.0.1:1".into())]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let msg = text(&out);
    let written = std::fs::read_to_string(&path).unwrap();
    let line = 1 + written
        .lines()
        .position(|l| l.starts_with("colour"))
        .unwrap();
    assert!(
        msg.contains(&format!("tidemark.toml:{line}:")),
        "line missing: {msg}"
    );
    assert!(msg.contains("sources[0].colour"), "key missing: {msg}");
}

#[test]
fn missing_env_var_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "TIDEMARK_SURELY_UNSET_VAR", "");
    let out = check(&path, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("TIDEMARK_SURELY_UNSET_VAR"),
        "{}",
        text(&out)
    );
}

#[test]
fn well_configured_source_passes_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "SRC_URL", "");
    let out = check(&path, &[("SRC_URL", support::mysql_url())]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("binlog_row_metadata"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misconfigured_source_lists_each_fix_with_exit_1_and_hides_the_password() {
    let server = support::mariadb_instance(
        "cli-check-misconfigured",
        &["--binlog-format=STATEMENT", "--binlog-row-metadata=MINIMAL"],
    );
    let url = server.url();
    let user = format!("cli_{}", std::process::id());
    let mut admin = support::mysql_conn(url).await;
    admin
        .query_drop(format!(
            "CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED BY 'Pa55-secret-word'; GRANT SELECT ON *.* TO '{user}'@'%'"
        ))
        .await
        .unwrap();
    let with_user = url.replace("root@", &format!("{user}:Pa55-secret-word@"));
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "SRC_URL", "");
    let out = check(&path, &[("SRC_URL", with_user)]);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    for fix in [
        "binlog_format",
        "binlog_row_metadata",
        "GRANT REPLICATION SLAVE",
    ] {
        assert!(msg.contains(fix), "{fix} missing from: {msg}");
    }
    assert!(!msg.contains("Pa55-secret-word"), "password leaked: {msg}");

    let wrong = url.replace("root@", &format!("{user}:not-the-Pa55word@"));
    let out = check(&path, &[("SRC_URL", wrong)]);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(msg.to_lowercase().contains("access denied"), "{msg}");
    assert!(!msg.contains("not-the-Pa55word"), "password leaked: {msg}");
    admin
        .query_drop(format!("DROP USER '{user}'@'%'"))
        .await
        .unwrap();
}
