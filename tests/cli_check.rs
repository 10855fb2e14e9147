//! `tidemark check` as an operator runs it: exit codes, messages, and no secrets in output.

mod support;

use std::process::{Command, Output, Stdio};

use mysql_async::prelude::Queryable;
use support::pipeline::fresh_warehouse;

/// A warehouse URL nothing listens on.
const UNREACHABLE_WAREHOUSE: &str = "postgres://tidemark@127.0.0.1:1/warehouse";

fn write_config(dir: &std::path::Path, url_env: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("tidemark.toml");
    let text = format!(
        r#"[group]
name = "cli-test"
state_dir = "{state}"

[warehouse]
kind = "postgres"
url = "${{WH_URL}}"

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

/// `tidemark check --config CONFIG` with `env`; the warehouse is the shared test Postgres unless
/// `env` sets `WH_URL`.
fn check(config: &std::path::Path, env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    cmd.args(["check", "--config"]).arg(config);
    cmd.env("WH_URL", support::pg_url());
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

#[test]
fn an_unreachable_warehouse_fails_the_check_with_its_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "SRC_URL", "");
    let out = check(
        &path,
        &[
            ("SRC_URL", support::mysql_url()),
            ("WH_URL", UNREACHABLE_WAREHOUSE.into()),
        ],
    );
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    let warehouse = msg
        .split("warehouse (")
        .nth(1)
        .unwrap_or_else(|| panic!("no warehouse report in: {msg}"));
    assert!(warehouse.contains("NOT READY"), "{msg}");
    assert!(
        warehouse.contains("FAIL  connection") && warehouse.contains("fix: check host, port"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warehouse_role_without_rights_is_told_what_to_grant() {
    let wh = fresh_warehouse("chk_rights").await;
    let role = format!("chk_role_{}", std::process::id());
    wh.client
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role};
             CREATE ROLE {role} LOGIN PASSWORD 'Wh-secret-Pa55';
             REVOKE ALL ON DATABASE \"{db}\" FROM PUBLIC;
             GRANT CONNECT ON DATABASE \"{db}\" TO {role};",
            db = wh.db
        ))
        .await
        .unwrap();
    let as_role = wh
        .url
        .replacen("postgres@", &format!("{role}:Wh-secret-Pa55@"), 1);
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "SRC_URL", "");
    let env = [("SRC_URL", support::mysql_url()), ("WH_URL", as_role)];
    let out = check(&path, &env);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(!msg.contains("Wh-secret-Pa55"), "password leaked: {msg}");
    let fixes: Vec<&str> = msg
        .lines()
        .filter_map(|l| l.trim().strip_prefix("fix: GRANT"))
        .collect();
    assert_eq!(fixes.len(), 2, "CREATE and TEMPORARY are missing: {msg}");

    // Granting what the report says makes the warehouse ready.
    for fix in fixes {
        wh.client
            .batch_execute(&format!("GRANT{fix}"))
            .await
            .unwrap();
    }
    let out = check(&path, &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    wh.client
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .await
        .unwrap();
}

/// `check` of a Redshift warehouse tries for real what loading needs: a file in the bucket, a
/// statement, a COPY of that file with the IAM role; a missing bucket fails with its fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_of_a_redshift_warehouse_writes_to_the_bucket_runs_a_statement_and_copies() {
    let wh = fresh_warehouse("cli_check_rs").await;
    let path_setup = support::redshift_path::RedshiftPath::start("cli-check-rs", &wh).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "SRC_URL", "");
    let redshift = |bucket: &str| {
        format!(
            "kind = \"redshift\"\ncluster_id = \"test\"\ndatabase = \"{}\"\ndb_user = \"tidemark\"\n\
             s3_bucket = \"{bucket}\"\niam_role = \"arn:aws:iam::000000000000:role/copy\"\n\
             region = \"{}\"\ns3_endpoint = \"{}\"\ns3_path_style = true\n\
             data_api_endpoint = \"{}\"",
            wh.db,
            support::S3_REGION,
            support::s3_url(),
            path_setup.server.endpoint
        )
    };
    let original = std::fs::read_to_string(&path).unwrap();
    let run_check = |bucket: &str| {
        let config = original.replace(
            "kind = \"postgres\"\nurl = \"${WH_URL}\"",
            &redshift(bucket),
        );
        std::fs::write(&path, config).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
        cmd.args(["check", "--config"])
            .arg(&path)
            .env("SRC_URL", support::mysql_url())
            .env("AWS_ACCESS_KEY_ID", support::S3_ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", support::S3_SECRET_ACCESS_KEY)
            .env("AWS_EC2_METADATA_DISABLED", "true");
        cmd.output().expect("running tidemark")
    };

    let out = tokio::task::block_in_place(|| run_check(&path_setup.bucket));
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(0), "{msg}");
    for passed in [
        "wrote a probe file",
        "ran a statement",
        "read a staged file in a COPY",
    ] {
        assert!(msg.contains(passed), "{passed}: {msg}");
    }

    let out = tokio::task::block_in_place(|| run_check("no-such-bucket-here"));
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(msg.contains("NoSuchBucket"), "{msg}");
    assert!(
        msg.contains("create the bucket or correct s3_bucket"),
        "{msg}"
    );
}

#[test]
fn a_null_warehouse_is_reported_ready() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "SRC_URL", "");
    let text_of = std::fs::read_to_string(&path).unwrap().replace(
        "kind = \"postgres\"\nurl = \"${WH_URL}\"",
        "kind = \"null\"",
    );
    std::fs::write(&path, text_of).unwrap();
    let out = check(&path, &[("SRC_URL", support::mysql_url())]);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(0), "{msg}");
    assert!(msg.contains("every batch is discarded"), "{msg}");
}

#[test]
fn check_into_a_closed_pipe_exits_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "SRC_URL", "");
    for _ in 0..5 {
        // Like `tidemark check | head -0`: the reader is gone before the report is written.
        let mut child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["check", "--config"])
            .arg(&path)
            .env("SRC_URL", support::mysql_url())
            .env("WH_URL", support::pg_url())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(
            stderr.is_empty(),
            "a closed pipe is not worth a message: {stderr}"
        );
    }
}
