//! Secrets referenced from the config, end to end against real servers: a MariaDB source whose
//! user name and password come from AWS Secrets Manager (the moto server of the dev services)
//! or from a file keeps replicating after its password is rotated (ALTER USER at the source,
//! the new value in Secrets Manager or the file) and its binlog connection is cut: the
//! supervisor's restart fetches the secret again. No password ever appears in anything tidemark
//! printed.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;

use support::compare::{Source, TablePair, wait_tables_equal};
use support::config::{GroupConfig, SourceConfig, toml_str};
use support::mysql_pipeline::exec;
use support::poll::wait_checkpoint;
use support::process::Tidemark;
use support::warehouse::fresh_warehouse;

/// How long the warehouse may take to catch up after a rotation: a restart that meets the old
/// password waits for the operator backoff (30 s to a minute) before it tries again.
const AFTER_ROTATION: Duration = Duration::from_secs(120);

/// A MariaDB user of this test only, dropped at the end.
struct TestUser {
    name: String,
}

impl TestUser {
    /// A fresh user `hint_<pid>_<n>` with `password` and the grants replication needs.
    async fn create(root: &mut mysql_async::Conn, hint: &str, password: &str) -> TestUser {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "{hint}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        exec(
            root,
            &[
                format!("DROP USER IF EXISTS '{name}'@'%'"),
                format!(
                    "CREATE USER '{name}'@'%' IDENTIFIED BY '{}'",
                    sql_escape(password)
                ),
                format!("GRANT ALL PRIVILEGES ON *.* TO '{name}'@'%'"),
            ],
        )
        .await;
        TestUser { name }
    }

    async fn set_password(&self, root: &mut mysql_async::Conn, password: &str) {
        exec(
            root,
            &[format!(
                "ALTER USER '{}'@'%' IDENTIFIED BY '{}'",
                self.name,
                sql_escape(password)
            )],
        )
        .await;
    }

    /// Cuts every connection of the user (tidemark's binlog dump among them), as a failover or
    /// a network cut would; returns how many there were.
    async fn kill_connections(&self, root: &mut mysql_async::Conn) -> usize {
        let ids: Vec<u64> = root
            .exec(
                "SELECT id FROM information_schema.PROCESSLIST WHERE user = ?",
                (self.name.as_str(),),
            )
            .await
            .unwrap();
        for id in &ids {
            // The connection may have ended on its own meanwhile.
            let _ = root.query_drop(format!("KILL {id}")).await;
        }
        ids.len()
    }

    async fn drop(self, root: &mut mysql_async::Conn) {
        exec(root, &[format!("DROP USER IF EXISTS '{}'@'%'", self.name)]).await;
    }
}

fn sql_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\'', "''")
}

/// `host:port` of the dev MariaDB.
fn mariadb_address() -> String {
    let url = support::mysql_url();
    let rest = url.split_once("://").unwrap().1;
    rest.rsplit_once('@')
        .map_or(rest, |(_, host)| host)
        .trim_end_matches('/')
        .to_owned()
}

/// A password with characters that must be percent-encoded in a URL, unique per call.
fn password(tag: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "Pw-{tag}-{}-{}@/#?%:x",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A Secrets Manager client for the moto server of the dev services.
async fn secrets_client() -> aws_sdk_secretsmanager::Client {
    let credentials = aws_sdk_secretsmanager::config::Credentials::new(
        support::S3_ACCESS_KEY_ID,
        support::S3_SECRET_ACCESS_KEY,
        None,
        None,
        "test",
    );
    let config = aws_sdk_secretsmanager::config::Builder::new()
        .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
        .region(aws_sdk_secretsmanager::config::Region::new(
            support::S3_REGION,
        ))
        .credentials_provider(credentials)
        .endpoint_url(support::s3_url())
        .build();
    aws_sdk_secretsmanager::Client::from_conf(config)
}

/// The `[secrets]` table pointing tidemark at the moto server.
fn secrets_table() -> String {
    format!(
        "\n[secrets]\nregion = {}\nendpoint = {}\n",
        toml_str(support::S3_REGION),
        toml_str(&support::s3_url())
    )
}

/// RDS-style secret text.
fn rds_secret(user: &str, password: &str) -> String {
    serde_json::json!({"engine": "mariadb", "username": user, "password": password}).to_string()
}

/// Everything tidemark wrote (every run's stdout and stderr), whole.
fn everything_printed(tm: &Tidemark) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(tm.dir()).unwrap() {
        let path = entry.unwrap().path();
        if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("out" | "err")
        ) {
            text.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
    text
}

fn assert_never_printed(tm: &Tidemark, secrets: &[&str]) {
    let printed = everything_printed(tm);
    for secret in secrets {
        let encoded =
            percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        assert!(
            !printed.contains(secret) && !printed.contains(&encoded),
            "tidemark printed a secret:\n{printed}"
        );
    }
}

async fn insert_rows(conn: &mut mysql_async::Conn, db: &str, ids: std::ops::Range<u32>) {
    for id in ids {
        conn.exec_drop(
            format!("INSERT INTO `{db}`.items (id, name) VALUES (?, ?)"),
            (id, format!("item {id}")),
        )
        .await
        .unwrap();
    }
}

/// The source's password is rotated in Secrets Manager and at the source, the source's
/// connection cut: tidemark reconnects with the new password and replicates on, and neither
/// password appears in its output. The warehouse URL comes whole from a file (`${file:...}`),
/// so the pool's connections go through secret resolution too.
#[tokio::test]
async fn aws_sm_password_rotation_is_picked_up_at_reconnect_and_never_printed() {
    let wh = fresh_warehouse("secrets_sm").await;
    let (mut root, db) = support::fresh_mysql_database("secrets_sm").await;
    exec(
        &mut root,
        &["CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(64))"],
    )
    .await;
    let first = password("one");
    let user = TestUser::create(&mut root, "tm_sm", &first).await;
    let sm = secrets_client().await;
    let secret_name = format!("tidemark-test/{db}");
    sm.create_secret()
        .name(&secret_name)
        .secret_string(rds_secret(&user.name, &first))
        .send()
        .await
        .expect("CreateSecret on the moto server");

    let url = format!(
        "mysql://${{aws-sm:{secret_name}#username}}:${{aws-sm:{secret_name}#password}}@{}",
        mariadb_address()
    );
    let source = SourceConfig::mysql("sm-src", &url, &db);
    let schema = source.schema();
    let mut group = GroupConfig::new("${file:warehouse.url}", vec![source]);
    group.extra_tables = secrets_table();
    let warehouse_url = wh.url.clone();
    let mut tm = Tidemark::prepare(|state| {
        let dir = state.parent().unwrap();
        std::fs::write(dir.join("warehouse.url"), format!("{warehouse_url}\n")).unwrap();
        group.render(state)
    });
    tm.spawn();
    wait_checkpoint(&mut tm, &wh, "sm-src", Duration::from_secs(60)).await;

    insert_rows(&mut root, &db, 1..11).await;
    let pairs = TablePair::mysql(&db, &["items"], &schema);
    wait_tables_equal(
        &mut tm,
        &mut Source::Mysql(&mut root),
        &wh.client,
        &pairs,
        Duration::from_secs(60),
    )
    .await;

    // Past the recheck age, so the restart fetches the secret again rather than use the cache.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let second = password("two");
    user.set_password(&mut root, &second).await;
    sm.put_secret_value()
        .secret_id(&secret_name)
        .secret_string(rds_secret(&user.name, &second))
        .send()
        .await
        .expect("PutSecretValue on the moto server");
    assert!(
        user.kill_connections(&mut root).await > 0,
        "tidemark had no connection to the source"
    );

    insert_rows(&mut root, &db, 11..21).await;
    wait_tables_equal(
        &mut tm,
        &mut Source::Mysql(&mut root),
        &wh.client,
        &pairs,
        AFTER_ROTATION,
    )
    .await;
    // It did reconnect: the user has a connection again, logged in with the new password.
    assert!(user.kill_connections(&mut root).await > 0, "{}", tm.logs());
    tm.assert_running("after the rotation");
    assert_never_printed(&tm, &[&first, &second]);

    drop(tm);
    user.drop(&mut root).await;
    let _ = sm
        .delete_secret()
        .secret_id(&secret_name)
        .force_delete_without_recovery(true)
        .send()
        .await;
}

/// The same with the password in a file next to the config (`${file:source.pw}`): the file is
/// rewritten with the new password and the connection cut; tidemark reads the file again.
#[tokio::test]
async fn file_password_rotation_is_picked_up_at_reconnect_and_never_printed() {
    let wh = fresh_warehouse("secrets_file").await;
    let (mut root, db) = support::fresh_mysql_database("secrets_file").await;
    exec(
        &mut root,
        &["CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(64))"],
    )
    .await;
    let first = password("one");
    let user = TestUser::create(&mut root, "tm_file", &first).await;
    let url = format!(
        "mysql://{}:${{file:source.pw}}@{}",
        user.name,
        mariadb_address()
    );
    let source = SourceConfig::mysql("file-src", &url, &db);
    let schema = source.schema();
    let group = GroupConfig::new(&wh.url, vec![source]);
    let written = first.clone();
    let mut tm = Tidemark::prepare(|state| {
        std::fs::write(
            state.parent().unwrap().join("source.pw"),
            format!("{written}\n"),
        )
        .unwrap();
        group.render(state)
    });
    tm.spawn();
    wait_checkpoint(&mut tm, &wh, "file-src", Duration::from_secs(60)).await;
    insert_rows(&mut root, &db, 1..6).await;
    let pairs = TablePair::mysql(&db, &["items"], &schema);
    wait_tables_equal(
        &mut tm,
        &mut Source::Mysql(&mut root),
        &wh.client,
        &pairs,
        Duration::from_secs(60),
    )
    .await;

    let second = password("two");
    user.set_password(&mut root, &second).await;
    write_atomically(&tm.dir().join("source.pw"), &format!("{second}\n"));
    assert!(user.kill_connections(&mut root).await > 0);

    insert_rows(&mut root, &db, 6..11).await;
    wait_tables_equal(
        &mut tm,
        &mut Source::Mysql(&mut root),
        &wh.client,
        &pairs,
        AFTER_ROTATION,
    )
    .await;
    assert!(user.kill_connections(&mut root).await > 0, "{}", tm.logs());
    tm.assert_running("after the rotation");
    assert_never_printed(&tm, &[&first, &second]);

    drop(tm);
    user.drop(&mut root).await;
}

/// Replaces a file as secret mounts do (write aside, rename), so no reader sees half of it.
fn write_atomically(path: &Path, text: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// A hundred sources starting at once on one shared secret make one Secrets Manager call; a
/// reconnect after an error fetches again (once the value is older than the recheck age) and
/// sees the rotated value.
#[tokio::test]
async fn one_call_for_many_sources_and_a_fresh_one_at_reconnect() {
    use tidemark::secrets::{Freshness, SecretRef, SecretStore, SecretsSettings};

    // SAFETY: set before the store's AWS client reads the environment; nextest runs each test
    // in its own process and this test starts no other thread first.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", support::S3_ACCESS_KEY_ID);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", support::S3_SECRET_ACCESS_KEY);
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
    let sm = secrets_client().await;
    let name = format!("tidemark-test/shared-{}", std::process::id());
    let first = password("one");
    sm.create_secret()
        .name(&name)
        .secret_string(rds_secret("repl", &first))
        .send()
        .await
        .expect("CreateSecret on the moto server");
    let store = SecretStore::new(SecretsSettings {
        region: Some(support::S3_REGION.to_owned()),
        endpoint: Some(support::s3_url()),
    });
    let reference = SecretRef::AwsSm {
        id: name.clone(),
        field: Some("password".to_owned()),
    };
    let origin = "t.toml:9: key `sources[0].url`";
    let values = futures_util::future::join_all(
        (0..100).map(|_| store.value(&reference, Freshness::Cached, origin)),
    )
    .await;
    assert!(values.iter().all(|v| v.as_ref().unwrap().expose() == first));
    assert_eq!(store.aws_calls(), 1);

    let second = password("two");
    sm.put_secret_value()
        .secret_id(&name)
        .secret_string(rds_secret("repl", &second))
        .send()
        .await
        .expect("PutSecretValue on the moto server");
    // Within the cache time a first start still takes the cached value...
    let cached = store.value(&reference, Freshness::Cached, origin).await;
    assert_eq!(cached.unwrap().expose(), first);
    assert_eq!(store.aws_calls(), 1);
    // ...and a reconnect past the recheck age fetches the rotated one.
    tokio::time::sleep(tidemark::secrets::RECHECK_AGE).await;
    let fresh = store.value(&reference, Freshness::Recheck, origin).await;
    assert_eq!(fresh.unwrap().expose(), second);
    assert_eq!(store.aws_calls(), 2);

    // A missing secret and a missing field: errors naming origin and reference, no value.
    let missing = SecretRef::AwsSm {
        id: format!("{name}-gone"),
        field: None,
    };
    let e = store
        .value(&missing, Freshness::Cached, origin)
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with(origin), "{e}");
    assert_eq!(e.kind(), tidemark::error::ErrorKind::Operator, "{e}");
    let no_field = SecretRef::AwsSm {
        id: name.clone(),
        field: Some("pasword".to_owned()),
    };
    let e = store
        .value(&no_field, Freshness::Cached, origin)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no field `pasword`") && !e.contains(&second),
        "{e}"
    );

    let _ = sm
        .delete_secret()
        .secret_id(&name)
        .force_delete_without_recovery(true)
        .send()
        .await;
}

/// The warehouse password in a file: rotated (ALTER ROLE, the file rewritten) and the
/// warehouse connections terminated, the pool's next connection fails with the old value, the
/// one after reads the file again and loading goes on. A private Postgres whose pg_hba.conf
/// asks this role for a password (the dev instances trust everyone).
#[tokio::test]
async fn warehouse_password_in_a_file_is_reread_after_a_failed_connect() {
    use support::warehouse::{fresh_warehouse_on, pg_client};

    let pg = support::postgres_instance("secrets_wh", &[]);
    let role = format!("tm_wh_{}", std::process::id());
    let first = password("one");
    let hba = pg.dir().join("pg/data/pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).expect("the instance's pg_hba.conf");
    std::fs::write(
        &hba,
        format!("host all {role} 127.0.0.1/32 scram-sha-256\n{rules}"),
    )
    .unwrap();
    let admin = pg_client(pg.url()).await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{}'; SELECT pg_reload_conf();",
            sql_escape(&first)
        ))
        .await
        .unwrap();
    let wh = fresh_warehouse_on(pg.url(), "secrets_wh").await;
    admin
        .batch_execute(&format!("ALTER DATABASE \"{}\" OWNER TO {role}", wh.db))
        .await
        .unwrap();
    let address = pg
        .url()
        .split_once('@')
        .unwrap()
        .1
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let warehouse_url = format!(
        "postgres://{role}:${{file:warehouse.pw}}@{address}/{}",
        wh.db
    );

    let (mut root, db) = support::fresh_mysql_database("secrets_wh").await;
    exec(
        &mut root,
        &["CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(64))"],
    )
    .await;
    let source = SourceConfig::mysql("wh-src", &support::mysql_url(), &db);
    let schema = source.schema();
    let group = GroupConfig::new(&warehouse_url, vec![source]);
    let written = first.clone();
    let mut tm = Tidemark::prepare(|state| {
        let dir = state.parent().unwrap();
        std::fs::write(dir.join("warehouse.pw"), format!("{written}\n")).unwrap();
        group.render(state)
    });
    tm.spawn();
    wait_checkpoint(&mut tm, &wh, "wh-src", Duration::from_secs(60)).await;
    insert_rows(&mut root, &db, 1..6).await;
    let pairs = TablePair::mysql(&db, &["items"], &schema);
    wait_tables_equal(
        &mut tm,
        &mut Source::Mysql(&mut root),
        &wh.client,
        &pairs,
        Duration::from_secs(60),
    )
    .await;

    let second = password("two");
    admin
        .batch_execute(&format!(
            "ALTER ROLE {role} PASSWORD '{}'",
            sql_escape(&second)
        ))
        .await
        .unwrap();
    write_atomically(&tm.dir().join("warehouse.pw"), &format!("{second}\n"));
    let terminated = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )
        .await
        .unwrap();
    assert!(
        !terminated.is_empty(),
        "tidemark had no warehouse connection"
    );

    insert_rows(&mut root, &db, 6..11).await;
    wait_tables_equal(
        &mut tm,
        &mut Source::Mysql(&mut root),
        &wh.client,
        &pairs,
        AFTER_ROTATION,
    )
    .await;
    tm.assert_running("after the rotation");
    // The old password was refused once (the role really logs in with a password), and the
    // next connection read the file again.
    let printed = everything_printed(&tm);
    assert!(
        printed.contains("password authentication failed"),
        "no refused login: {printed}"
    );
    assert_never_printed(&tm, &[&first, &second]);
    drop(tm);
}
