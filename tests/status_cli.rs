//! `tidemark status` against a running group: every configured source gets a line, with the
//! position it committed, and a source that never started says so; `--json` is for scripts.

mod support;

use std::process::Command;

use support::pipeline::MysqlSetup;
use support::pipeline::SourceConfig;

fn status(config: &std::path::Path, json: bool) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    cmd.arg("status").arg("--config").arg(config);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("running tidemark status");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_each_source_with_its_committed_position() {
    let mut s = MysqlSetup::start(
        "status_cli",
        "shop",
        &["CREATE TABLE t (id INT PRIMARY KEY, v INT)"],
    )
    .await;
    s.exec(&["INSERT INTO t VALUES (1, 1), (2, 2)"]).await;
    s.converge(&["t"]).await;

    // A second source that was never started: the same config file with one more source.
    let mut group = s.group.clone();
    let mut idle = SourceConfig::mysql("idle", &support::mysql_url(), &s.db);
    idle.tenant = "idle".into();
    group.sources.push(idle);
    let config = s.tm.dir().join("status.toml");
    std::fs::write(&config, group.render(&s.tm.dir().join("state"))).unwrap();

    let committed: String =
        s.wh.rows("SELECT position FROM tidemark.progress WHERE source_id = 'shop'")
            .await[0][0]
            .clone()
            .expect("a committed position");

    let (code, out, err) = status(&config, false);
    assert_eq!(code, 0, "stderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "a header and a line per source:\n{out}");
    assert!(lines[0].starts_with("SOURCE"), "{out}");
    assert!(
        lines[1].starts_with("shop ")
            && lines[1].contains("streaming")
            && lines[1].contains(&committed),
        "{out}"
    );
    assert!(
        lines[2].starts_with("idle ") && lines[2].contains("not started"),
        "{out}"
    );

    let (code, out, err) = status(&config, true);
    assert_eq!(code, 0, "stderr: {err}");
    let parsed: serde_json::Value = serde_json::from_str(&out).expect("JSON output");
    let sources = parsed.as_array().expect("an array");
    assert_eq!(sources[0]["source"], "shop");
    assert_eq!(sources[0]["state"], "streaming");
    assert_eq!(sources[0]["position"], committed.as_str());
    assert_eq!(sources[0]["tables"], 1);
    assert!(sources[0]["last_commit_age_s"].as_f64().is_some(), "{out}");
    assert_eq!(sources[1]["state"], "not_started");
    assert!(sources[1]["position"].is_null(), "{out}");
}

#[test]
fn an_unreachable_warehouse_exits_1_naming_it_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("t.toml");
    std::fs::write(
        &config,
        r#"[group]
name = "g"
[warehouse]
kind = "postgres"
url = "postgres://loader:s3cret-pw@127.0.0.1:1/wh"
[[sources]]
id = "a"
kind = "mysql"
url = "mysql://repl@127.0.0.1:1"
tenant = "t"
region = "r"
function = "f"
include = ["shop.*"]
snapshot = "never"
"#,
    )
    .unwrap();
    let (code, out, err) = status(&config, false);
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(!err.contains("s3cret-pw"), "{err}");
}
