//! TLS with `verify-full` / `VERIFY_IDENTITY` against the dev servers, which serve a certificate
//! of the test CA for `localhost` and `127.0.0.1`: rows arrive over verified connections, and a
//! wrong CA or a host the certificate does not name stops only that source, with a message
//! naming the host, the setting and the fix.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::pg_source::SlotGuard;
use support::pipeline::{
    GroupConfig, Source, SourceConfig, TablePair, Tidemark, fresh_warehouse, pg_client,
    wait_checkpoint, wait_tables_equal, wait_until,
};

const CONVERGE: Duration = Duration::from_secs(60);

fn mysql_verified(ca: &Path) -> String {
    format!(
        "{}?ssl-mode=VERIFY_IDENTITY&ssl-ca={}",
        support::mysql_url(),
        ca.display()
    )
}

fn pg_verified(url: &str, ca: &Path) -> String {
    format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display())
}

/// A CA the dev servers do not know, made with the openssl CLI in `dir`.
fn other_ca(dir: &Path) -> PathBuf {
    let ca = dir.join("other-ca.pem");
    let status = Command::new("openssl")
        .args(["req", "-x509", "-new", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=not the tidemark test CA", "-keyout"])
        .arg(dir.join("other-ca.key"))
        .arg("-out")
        .arg(&ca)
        .output()
        .expect("running openssl");
    assert!(status.status.success(), "{status:?}");
    ca
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_everywhere_replicates_mariadb_and_postgres() {
    let ca = support::test_ca_file();
    let (mut my, db) = support::fresh_mysql_database("tls").await;
    my.query_drop(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO t VALUES (1, 'before')",
    )
    .await
    .unwrap();
    let pg = fresh_warehouse("tls_src").await;
    pg.client
        .batch_execute("CREATE SCHEMA shop; CREATE TABLE shop.t (id int PRIMARY KEY, v text); INSERT INTO shop.t VALUES (1, 'before')")
        .await
        .unwrap();
    let warehouse = fresh_warehouse("tls_wh").await;
    let slot = format!("{}_slot", pg.db.to_lowercase());
    let _slot = SlotGuard {
        url: pg.url.clone(),
        slot: slot.clone(),
    };
    let mysql_source = SourceConfig::mysql("my-tls", &mysql_verified(&ca), &db);
    let mut pg_source = SourceConfig::postgres("pg-tls", &pg_verified(&pg.url, &ca), &["shop.*"]);
    pg_source.extra.push_str(&format!("slot = \"{slot}\"\n"));
    pg_source.function = "pgtls".into();
    let (my_schema, pg_schema) = (mysql_source.schema(), pg_source.schema());
    let group = GroupConfig::new(
        &pg_verified(&warehouse.url, &ca),
        vec![mysql_source, pg_source],
    );
    let mut tm = Tidemark::start(&group);
    wait_checkpoint(&mut tm, &warehouse, "my-tls", CONVERGE).await;
    wait_checkpoint(&mut tm, &warehouse, "pg-tls", CONVERGE).await;
    my.query_drop("INSERT INTO t VALUES (2, 'streamed'); UPDATE t SET v = 'changed' WHERE id = 1")
        .await
        .unwrap();
    pg.client
        .batch_execute("INSERT INTO shop.t VALUES (2, 'streamed'); UPDATE shop.t SET v = 'changed' WHERE id = 1")
        .await
        .unwrap();
    let pairs = TablePair::mysql(&db, &["t"], &my_schema);
    wait_tables_equal(
        &mut tm,
        &mut Source::Mysql(&mut my),
        &warehouse.client,
        &pairs,
        CONVERGE,
    )
    .await;
    let pairs = vec![TablePair::new(("shop", "t"), (pg_schema.as_str(), "t"))];
    wait_tables_equal(
        &mut tm,
        &mut Source::Postgres(&pg.client),
        &warehouse.client,
        &pairs,
        CONVERGE,
    )
    .await;
    // Every connection tidemark holds to Postgres (source catalog, replication, warehouse) is TLS.
    let admin = pg_client(&support::pg_url()).await;
    let rows = admin
        .query(
            "SELECT a.application_name, a.backend_type, s.ssl FROM pg_stat_activity a
             JOIN pg_stat_ssl s USING (pid)
             WHERE a.datname IN ($1, $2) AND a.application_name LIKE 'tidemark%'",
            &[&pg.db, &warehouse.db],
        )
        .await
        .unwrap();
    assert!(
        !rows.is_empty(),
        "tidemark holds no connection to the test databases"
    );
    for row in &rows {
        let (app, kind, ssl): (String, String, bool) = (row.get(0), row.get(1), row.get(2));
        assert!(ssl, "{app} ({kind}) is not a TLS connection");
    }
    assert!(
        rows.iter().any(|r| r.get::<_, String>(1) == "walsender"),
        "no replication connection among {:?}",
        rows.iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    );
    tm.terminate(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_stops_only_its_source_and_names_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = other_ca(dir.path());
    let (mut my, db) = support::fresh_mysql_database("tlsbad").await;
    my.query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let pg = fresh_warehouse("tlsbad_src").await;
    pg.client
        .batch_execute("CREATE SCHEMA shop; CREATE TABLE shop.t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let warehouse = fresh_warehouse("tlsbad_wh").await;
    // The good source: the same database over a verified connection.
    let good = SourceConfig::mysql("my-good", &mysql_verified(&support::test_ca_file()), &db);
    let mut bad_mysql = SourceConfig::mysql("my-wrong-ca", &mysql_verified(&wrong), &db);
    bad_mysql.function = "bad".into();
    let mut bad_pg =
        SourceConfig::postgres("pg-wrong-ca", &pg_verified(&pg.url, &wrong), &["shop.*"]);
    bad_pg.function = "pgbad".into();
    let good_schema = good.schema();
    let group = GroupConfig::new(&warehouse.url, vec![good, bad_mysql, bad_pg]);
    let mut tm = Tidemark::start(&group);
    wait_checkpoint(&mut tm, &warehouse, "my-good", CONVERGE).await;
    my.query_drop("INSERT INTO t VALUES (1), (2)")
        .await
        .unwrap();
    let pairs = TablePair::mysql(&db, &["t"], &good_schema);
    wait_tables_equal(
        &mut tm,
        &mut Source::Mysql(&mut my),
        &warehouse.client,
        &pairs,
        CONVERGE,
    )
    .await;
    let wrong_text = wrong.display().to_string();
    let said = wait_until(CONVERGE, async || {
        let logs = tm.logs();
        logs.contains(&format!(
            "the certificate of the server at 127.0.0.1 is not signed by the CA in {wrong_text} (ssl-mode=VERIFY_IDENTITY ssl-ca={wrong_text})"
        )) && logs.contains(&format!(
            "the certificate of the server at 127.0.0.1 is not signed by the CA in {wrong_text} (sslmode=verify-full sslrootcert={wrong_text})"
        ))
    })
    .await;
    assert!(
        said,
        "no clear TLS message for both sources in:\n{}",
        tm.logs()
    );
    assert!(
        tm.logs().contains("set ssl-ca to the CA file"),
        "{}",
        tm.logs()
    );
    assert!(
        tm.logs().contains("set sslrootcert to the CA file"),
        "{}",
        tm.logs()
    );
    tm.assert_running("after two sources failed TLS verification");
    tm.terminate(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_refuses_a_host_the_certificate_does_not_name() {
    // A private Postgres that also listens on 127.0.0.2, which its certificate does not name.
    let server =
        support::postgres_instance("tlsname", &["-c", "listen_addresses=127.0.0.1,127.0.0.2"]);
    let ca = support::test_ca_file();
    let other_host = server.url().replace("127.0.0.1", "127.0.0.2");
    let dir = tempfile::tempdir().unwrap();
    let check = |url: &str| {
        let config = dir.path().join("tidemark.toml");
        std::fs::write(
            &config,
            format!(
                "[group]\nname = \"tls\"\nstate_dir = \"{dir}\"\n\n[warehouse]\nkind = \"postgres\"\n\
                 url = \"{url}\"\n\n[[sources]]\nid = \"pg\"\nkind = \"postgres\"\nurl = \"{url}\"\n\
                 tenant = \"acme\"\nregion = \"in\"\nfunction = \"txn\"\ninclude = [\"public.*\"]\nsnapshot = \"never\"\n",
                dir = dir.path().display(),
            ),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = check(&pg_verified(&other_host, &ca));
    assert!(!ok, "{text}");
    // Both the source's and the warehouse's connection say it.
    let says =
        "the certificate of the server at 127.0.0.2 does not name 127.0.0.2 (sslmode=verify-full";
    assert_eq!(text.matches(says).count(), 2, "{text}");
    // The same server under the address its certificate carries: no TLS complaint.
    let (_, text) = check(&pg_verified(server.url(), &ca));
    assert!(!text.contains("does not name"), "{text}");
    assert!(!text.contains("TLS:"), "{text}");
}
