//! Config loading: typed values, `${ENV}` interpolation, and errors that name file, line and key.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use tidemark::config::{
    ByteSize, Config, ConfigError, ConfigErrorKind, SnapshotMode, SourceConfig, SourceKind,
    WarehouseConfig, WarehouseKind,
};
use tidemark::sink::redshift::config::{RedshiftAuth, RedshiftTarget};
use tidemark::sink::redshift::encode::Oversize;
use tidemark::sink::redshift::types::WideDecimal;
use tidemark::source::mysql::config::{MysqlSettings, derived_server_id};
use tidemark::source::postgres::config::PostgresSettings;

const PASSWORD: &str = "pw-Zq81x!never-printed";

/// A valid one-source config; tests append or replace lines to break it.
const BASE: &str = r#"[group]
name = "test"
state_dir = "/tmp/tidemark-test"

[warehouse]
kind = "postgres"
url = "postgres://tidemark:${WH_PASSWORD}@127.0.0.1:5432/warehouse"

[[sources]]
id = "acme-in-txn"
kind = "mysql"
url = "mysql://repl:${ACME_PASSWORD}@10.0.0.5:3306"
tenant = "acme"
region = "in"
function = "txn"
include = ["shop.*"]
exclude = ["shop.tmp_*"]
snapshot = "never"
"#;

/// A second source, appended to [`BASE`] starting at line 20.
const SECOND: &str = r#"
[[sources]]
id = "globex-sg-txn"
kind = "mysql"
url = "mysql://repl:${ACME_PASSWORD}@10.0.0.6:3306"
tenant = "globex"
region = "sg"
function = "txn"
snapshot = "never"
"#;

fn env(name: &str) -> Option<String> {
    match name {
        "WH_PASSWORD" | "ACME_PASSWORD" => Some(PASSWORD.to_string()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_str_with_env(text, Path::new("conf/test.toml"), &env)
}

fn parse_err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(e) => e,
    }
}

/// Line (1-based) of the first line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle} not in text"))
}

/// The settings of a source the test configured as MySQL.
fn mysql(source: &SourceConfig) -> &MysqlSettings {
    source.mysql().expect("a MySQL source")
}

/// The settings of a source the test configured as Postgres.
fn postgres_settings(source: &SourceConfig) -> &PostgresSettings {
    source.postgres().expect("a Postgres source")
}

fn assert_error(e: &ConfigError, kind: ConfigErrorKind, key: &str, line: usize) {
    assert_eq!(e.kind(), kind, "{e}");
    assert_eq!(e.key(), Some(key), "{e}");
    assert_eq!(e.line(), Some(line), "{e}");
    let prefix = format!("conf/test.toml:{line}: key `{key}`: ");
    assert!(e.to_string().starts_with(&prefix), "{e}");
    assert!(!e.to_string().contains('\n'), "{e}");
}

#[test]
fn valid_config_loads_typed_values() {
    let text = format!("{BASE}{SECOND}");
    let config = parse(&text).unwrap();
    assert_eq!(config.group.name, "test");
    assert_eq!(config.batch.max_rows, 100_000);
    assert_eq!(config.batch.max_bytes, ByteSize(64 << 20));
    assert_eq!(config.batch.max_delay, Duration::from_millis(500));
    assert_eq!(config.batch.catch_up_lag, Duration::from_secs(10));
    assert_eq!(config.batch.catch_up_max_bytes, ByteSize(1 << 30));
    let source = &config.sources[0];
    assert_eq!(source.kind(), SourceKind::Mysql);
    assert_eq!(source.snapshot, SnapshotMode::Never);
    assert_eq!(source.staging_schema(), "acme_in_txn");
    assert_eq!(source.heartbeat, Duration::from_secs(5));
    assert_eq!(mysql(source).server_id, derived_server_id("acme-in-txn"));
    assert_eq!(
        source.url.expose(),
        format!("mysql://repl:{PASSWORD}@10.0.0.5:3306")
    );
    assert!(source.includes_table("shop", "orders"));
    assert!(!source.includes_table("shop", "tmp_orders"));
    assert!(!source.includes_table("other", "orders"));
    // No include: every table except system schemas.
    let second = config.source("globex-sg-txn").unwrap();
    assert!(second.includes_table("anything", "t"));
    assert!(!second.includes_table("mysql", "user"));
    // One literal database: tables keep their name; every database: prefixed by it.
    assert_eq!(source.target_table, "{table}");
    assert_eq!(source.target_table_name("shop", "Orders"), "orders");
    assert_eq!(second.target_table, "{database}__{table}");
    assert_eq!(second.target_table_name("Shop", "orders"), "shop__orders");
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let text = format!("{BASE}{SECOND}").replace(
        "function = \"txn\"\nsnapshot",
        "fucntion = \"txn\"\nsnapshot",
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        ConfigErrorKind::UnknownKey,
        "sources[1].fucntion",
        line_of(&text, "fucntion"),
    );
    assert!(
        e.message().contains("`function`"),
        "lists the expected keys: {e}"
    );
}

#[test]
fn unknown_key_in_group_and_unknown_section() {
    let text = BASE.replace("name = \"test\"", "name = \"test\"\nstate-dir = \"x\"");
    let e = parse_err(&text);
    assert_error(&e, ConfigErrorKind::UnknownKey, "group.state-dir", 3);

    let text = format!("{BASE}\n[batches]\nmax_rows = 5\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        ConfigErrorKind::UnknownKey,
        "batches",
        line_of(&text, "[batches]"),
    );
}

#[test]
fn missing_key_names_the_table() {
    let text = format!("{BASE}{SECOND}").replace("tenant = \"globex\"\n", "");
    let e = parse_err(&text);
    assert_error(&e, ConfigErrorKind::MissingKey, "sources[1].tenant", 20);

    let e = parse_err(&BASE.replace(
        "[group]\nname = \"test\"\nstate_dir = \"/tmp/tidemark-test\"\n",
        "",
    ));
    assert_eq!(e.kind(), ConfigErrorKind::MissingKey);
    assert_eq!(e.key(), Some("group"));
}

#[test]
fn missing_env_var_names_variable_key_and_line() {
    let text = BASE.replace("${ACME_PASSWORD}", "${TIDEMARK_TEST_SURELY_UNSET_VAR}");
    let e = parse_err(&text);
    assert_error(&e, ConfigErrorKind::Env, "sources[0].url", 12);
    assert!(
        e.message().contains("TIDEMARK_TEST_SURELY_UNSET_VAR"),
        "{e}"
    );
}

#[test]
fn env_defaults_and_no_toml_injection() {
    let text = BASE.replace("${ACME_PASSWORD}", "${NOT_SET:-fallback}");
    let config = parse(&text).unwrap();
    assert_eq!(
        config.sources[0].url.expose(),
        "mysql://repl:fallback@10.0.0.5:3306"
    );

    // A variable's value is data, never TOML: quotes and newlines stay in the string.
    let evil = |name: &str| match name {
        "TENANT" => Some("acme\"\nsnapshot = \"initial".to_string()),
        other => env(other),
    };
    let text = BASE.replace("tenant = \"acme\"", "tenant = \"${TENANT}\"");
    let e = Config::from_str_with_env(&text, Path::new("conf/test.toml"), &evil).unwrap_err();
    assert_error(&e, ConfigErrorKind::Invalid, "sources[0].tenant", 13);
}

#[test]
fn bad_duration_and_size_are_rejected() {
    let text = format!("{BASE}\n[batch]\nmax_delay = \"5 minutes\"\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        "batch.max_delay",
        line_of(&text, "max_delay"),
    );
    assert!(
        e.message().contains("\"500ms\""),
        "shows the accepted form: {e}"
    );

    let text = BASE.replace(
        "snapshot = \"never\"",
        "snapshot = \"never\"\nheartbeat = \"5\"",
    );
    let e = parse_err(&text);
    assert_error(&e, ConfigErrorKind::Invalid, "sources[0].heartbeat", 19);

    let text = format!("{BASE}\n[batch]\nmax_bytes = \"64 megs\"\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        "batch.max_bytes",
        line_of(&text, "max_bytes"),
    );

    let text = format!("{BASE}\n[batch]\ncatch_up_lag = \"0s\"\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        "batch.catch_up_lag",
        line_of(&text, "catch_up_lag"),
    );

    let text = format!("{BASE}\n[batch]\ncatch_up_max_bytes = \"lots\"\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        "batch.catch_up_max_bytes",
        line_of(&text, "catch_up_max_bytes"),
    );

    let text = format!("{BASE}\n[batch]\nmax_rows = \"many\"\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        ConfigErrorKind::WrongType,
        "batch.max_rows",
        line_of(&text, "max_rows"),
    );
}

#[test]
fn duplicate_ids_are_rejected() {
    let text = format!("{BASE}{SECOND}").replace("globex-sg-txn", "acme-in-txn");
    let e = parse_err(&text);
    assert_error(&e, ConfigErrorKind::Invalid, "sources[1].id", 21);
    assert!(
        e.message().contains("line 10"),
        "points at the first use: {e}"
    );
}

#[test]
fn duplicate_staging_schemas_are_rejected() {
    let text = format!("{BASE}{SECOND}")
        .replace("tenant = \"globex\"", "tenant = \"ACME\"")
        .replace("region = \"sg\"", "region = \"in\"");
    let e = parse_err(&text);
    assert_error(&e, ConfigErrorKind::Invalid, "sources[1].tenant", 24);
    assert!(e.message().contains("acme_in_txn"), "{e}");
}

#[test]
fn invalid_schema_name_is_rejected() {
    let text = BASE.replace("region = \"in\"", "region = \"in-south\"");
    let e = parse_err(&text);
    assert_error(&e, ConfigErrorKind::Invalid, "sources[0].region", 14);
    assert!(e.message().contains("acme_in-south_txn"), "{e}");

    let text = BASE.replace("tenant = \"acme\"", "tenant = \"9acme\"");
    let e = parse_err(&text);
    assert_error(&e, ConfigErrorKind::Invalid, "sources[0].tenant", 13);

    let long = "t".repeat(121); // + "_in_txn" = 128 bytes
    let text = BASE.replace("tenant = \"acme\"", &format!("tenant = \"{long}\""));
    let e = parse_err(&text);
    assert_error(&e, ConfigErrorKind::Invalid, "sources[0].tenant", 13);
    assert!(e.message().contains("127 bytes"), "{e}");

    // Upper case is fine: the schema is lowercased.
    let text = BASE.replace("tenant = \"acme\"", "tenant = \"ACME\"");
    assert_eq!(
        parse(&text).unwrap().sources[0].staging_schema(),
        "acme_in_txn"
    );
}

/// [`BASE`] with `line` added to its `[[sources]]` table, after `function`.
fn with_source_line(line: &str) -> String {
    BASE.replace(
        "function = \"txn\"\n",
        &format!("function = \"txn\"\n{line}\n"),
    )
}

/// Parses [`BASE`] with `line` (`key = value`) added to its source, expecting an invalid-value
/// error naming `sources[0].<key>` and that line; returns it for checks of its message.
fn invalid_source_line(line: &str) -> ConfigError {
    let key = line.split(" = ").next().unwrap();
    let text = with_source_line(line);
    let e = parse_err(&text);
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        &format!("sources[0].{key}"),
        line_of(&text, key),
    );
    e
}

#[test]
fn target_schema_template_is_rendered_and_lowercased() {
    let text = with_source_line("target_schema = \"CDC_{tenant}_{function}\"");
    assert_eq!(
        parse(&text).unwrap().sources[0].staging_schema(),
        "cdc_acme_txn"
    );
    assert_eq!(
        parse(&text).unwrap().sources[0].target_schema,
        "cdc_acme_txn"
    );

    // Interpolation first, then the template.
    let vars = |name: &str| match name {
        "SCHEMA_PREFIX" => Some("Stage".to_string()),
        other => env(other),
    };
    let text = with_source_line("target_schema = \"${SCHEMA_PREFIX}_{region}\"");
    let config = Config::from_str_with_env(&text, Path::new("conf/test.toml"), &vars).unwrap();
    assert_eq!(config.sources[0].staging_schema(), "stage_in");

    // tenant/region/function need not form a valid name when target_schema does not use them.
    let text = with_source_line("target_schema = \"acme_{region}\"")
        .replace("tenant = \"acme\"", "tenant = \"acme-corp\"");
    assert_eq!(parse(&text).unwrap().sources[0].staging_schema(), "acme_in");
}

#[test]
fn target_schema_unknown_placeholder_names_key_and_line() {
    let e = invalid_source_line("target_schema = \"{tenant}_{zone}\"");
    assert!(e.message().contains("`{zone}`"), "{e}");
    assert!(
        e.message()
            .contains("{tenant}, {region}, {function} and {id}"),
        "lists the placeholders: {e}"
    );

    let e = invalid_source_line("target_schema = \"{tenant}_{region\"");
    assert!(e.message().contains("not closed"), "{e}");

    invalid_source_line("target_schema = \"\"");
}

#[test]
fn invalid_rendered_target_schema_names_the_key() {
    // The id `acme-in-txn` has `-`, which no schema name may hold.
    let e = invalid_source_line("target_schema = \"src_{id}\"");
    assert!(e.message().contains("`src_acme-in-txn`"), "{e}");
    assert!(e.message().contains("contains `-`"), "{e}");

    let e = invalid_source_line("target_schema = \"Public\"");
    assert!(e.message().contains("reserved"), "{e}");

    let e = invalid_source_line("target_schema = \"9_{tenant}\"");
    assert!(e.message().contains("digit"), "{e}");
}

#[test]
fn duplicate_rendered_target_schemas_are_rejected() {
    let text = format!("{BASE}{SECOND}").replace(
        "function = \"txn\"\nsnapshot",
        "function = \"txn\"\ntarget_schema = \"ACME_IN_{function}\"\nsnapshot",
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        "sources[1].target_schema",
        line_of(&text, "target_schema"),
    );
    assert!(e.message().contains("acme_in_txn"), "{e}");
    assert!(e.message().contains("sources[0]"), "{e}");
}

#[test]
fn target_table_template_is_checked() {
    let text = with_source_line("target_table = \"{schema}_{table}\"");
    let config = parse(&text).unwrap();
    assert_eq!(config.sources[0].target_table, "{schema}_{table}");
    assert_eq!(
        config.sources[0].target_table_name("Shop", "Orders"),
        "shop_orders"
    );

    let e = invalid_source_line("target_table = \"{db}__{table}\"");
    assert!(e.message().contains("unknown placeholder `{db}`"), "{e}");
    assert!(
        e.message().contains("{database}, {schema} and {table}"),
        "{e}"
    );

    let e = invalid_source_line("target_table = \"{database}_{table\"");
    assert!(e.message().contains("not closed"), "{e}");

    let e = invalid_source_line("target_table = \"{database}_all\"");
    assert!(e.message().contains("must contain {table}"), "{e}");
}

#[test]
fn snapshot_modes_and_their_limits_are_read() {
    for mode in ["initial", "initial_only", "never", "when_needed"] {
        let text = BASE.replace("snapshot = \"never\"", &format!("snapshot = \"{mode}\""));
        let config = parse(&text).unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert_eq!(config.sources[0].snapshot.as_str(), mode);
        assert_eq!(config.sources[0].snapshot_chunk_rows, 50_000);
        assert!((1..=4).contains(&config.sources[0].snapshot_parallelism));
    }
    let text = BASE.replace(
        "snapshot = \"never\"",
        "snapshot = \"initial\"\nsnapshot_parallelism = 3\nsnapshot_chunk_rows = 1000",
    );
    let config = parse(&text).unwrap();
    assert_eq!(config.sources[0].snapshot_parallelism, 3);
    assert_eq!(config.sources[0].snapshot_chunk_rows, 1000);
    let text = BASE.replace(
        "snapshot = \"never\"",
        "snapshot = \"initial\"\nsnapshot_parallelism = 0",
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        "sources[0].snapshot_parallelism",
        19,
    );
    assert!(e.message().contains("from 1 to 64"), "{e}");

    let text = BASE.replace("snapshot = \"never\"", "snapshot = \"sometimes\"");
    let e = parse_err(&text);
    assert_error(&e, ConfigErrorKind::Invalid, "sources[0].snapshot", 18);
}

#[test]
fn kinds_are_checked() {
    let text = BASE.replace("kind = \"mysql\"", "kind = \"oracle\"");
    let e = parse_err(&text);
    assert_error(&e, ConfigErrorKind::Invalid, "sources[0].kind", 11);

    let text = BASE.replace("kind = \"postgres\"", "kind = \"snowflake\"");
    let e = parse_err(&text);
    assert_error(&e, ConfigErrorKind::Invalid, "warehouse.kind", 6);

    let text = BASE.replace("mysql://repl", "postgres://repl");
    let e = parse_err(&text);
    assert_error(&e, ConfigErrorKind::Invalid, "sources[0].url", 12);
}

#[test]
fn server_id_is_explicit_or_derived() {
    let text = BASE.replace(
        "snapshot = \"never\"",
        "snapshot = \"never\"\nserver_id = 4101",
    );
    assert_eq!(mysql(&parse(&text).unwrap().sources[0]).server_id, 4101);

    let text = BASE.replace(
        "snapshot = \"never\"",
        "snapshot = \"never\"\nserver_id = 0",
    );
    let e = parse_err(&text);
    assert_error(&e, ConfigErrorKind::Invalid, "sources[0].server_id", 19);
}

#[test]
fn redshift_requires_its_keys() {
    let redshift = r#"[warehouse]
kind = "redshift"
workgroup = "analytics"
database = "warehouse"
s3_bucket = "bucket"
iam_role = "arn:aws:iam::123456789012:role/copy"
region = "ap-south-1"
"#;
    let text = BASE.replace(
        "[warehouse]\nkind = \"postgres\"\nurl = \"postgres://tidemark:${WH_PASSWORD}@127.0.0.1:5432/warehouse\"\n",
        redshift,
    );
    let config = parse(&text).unwrap();
    let WarehouseConfig::Redshift(rs) = &config.warehouse else {
        panic!("expected redshift: {:?}", config.warehouse);
    };
    assert_eq!(rs.target, RedshiftTarget::Workgroup("analytics".into()));
    assert_eq!(rs.auth, RedshiftAuth::Iam);
    assert_eq!(rs.s3_prefix, "tidemark/");

    let e = parse_err(&text.replace("s3_bucket = \"bucket\"\n", ""));
    assert_error(&e, ConfigErrorKind::MissingKey, "warehouse.s3_bucket", 5);

    let e = parse_err(&text.replace("workgroup = \"analytics\"", "cluster_id = \"analytics\""));
    assert_error(&e, ConfigErrorKind::MissingKey, "warehouse.secret_arn", 5);

    let e = parse_err(&text.replace("region = \"ap-south-1\"", "url = \"postgres://x@y/z\""));
    assert_error(&e, ConfigErrorKind::Invalid, "warehouse.url", 11);

    let e = parse_err(&BASE.replace(
        "kind = \"postgres\"",
        "kind = \"postgres\"\ns3_bucket = \"b\"",
    ));
    assert_error(&e, ConfigErrorKind::Invalid, "warehouse.s3_bucket", 7);
}

#[test]
fn redshift_policies_and_endpoints_are_checked() {
    let redshift = r#"[warehouse]
kind = "redshift"
workgroup = "analytics"
database = "warehouse"
s3_bucket = "bucket"
iam_role = "arn:aws:iam::123456789012:role/copy"
region = "ap-south-1"
oversize = "truncate"
wide_decimal = "decimal38"
keep_files = "7d"
soft_delete = true
s3_endpoint = "http://127.0.0.1:9000"
s3_path_style = true
"#;
    let text = BASE.replace(
        "[warehouse]\nkind = \"postgres\"\nurl = \"postgres://tidemark:${WH_PASSWORD}@127.0.0.1:5432/warehouse\"\n",
        redshift,
    );
    let config = parse(&text).unwrap();
    let WarehouseConfig::Redshift(rs) = &config.warehouse else {
        panic!("expected redshift: {:?}", config.warehouse);
    };
    assert_eq!(rs.oversize, Oversize::Truncate);
    assert_eq!(rs.wide_decimal, WideDecimal::Decimal38);
    assert_eq!(rs.keep_files, std::time::Duration::from_secs(7 * 86_400));
    assert!(rs.soft_delete && rs.s3_path_style);
    assert_eq!(rs.s3_endpoint.as_deref(), Some("http://127.0.0.1:9000"));

    let e = parse_err(&text.replace("oversize = \"truncate\"", "oversize = \"cut\""));
    assert_error(&e, ConfigErrorKind::Invalid, "warehouse.oversize", 12);
    let e = parse_err(&text.replace("\"decimal38\"", "\"float\""));
    assert_error(&e, ConfigErrorKind::Invalid, "warehouse.wide_decimal", 13);
    let e = parse_err(&text.replace("\"7d\"", "\"a week\""));
    assert_error(&e, ConfigErrorKind::Invalid, "warehouse.keep_files", 14);
    let e = parse_err(&text.replace("\"http://127.0.0.1:9000\"", "\"127.0.0.1:9000\""));
    assert_error(&e, ConfigErrorKind::Invalid, "warehouse.s3_endpoint", 16);
    // A null warehouse keeps nothing to soft-delete in.
    let e = parse_err(&BASE.replace(
        "kind = \"postgres\"\nurl = \"postgres://tidemark:${WH_PASSWORD}@127.0.0.1:5432/warehouse\"",
        "kind = \"null\"\nsoft_delete = true",
    ));
    assert_error(&e, ConfigErrorKind::Invalid, "warehouse.soft_delete", 7);
}

#[test]
fn syntax_errors_have_a_line() {
    let text = BASE.replace("tenant = \"acme\"", "tenant = \"acme");
    let e = parse_err(&text);
    assert_eq!(e.kind(), ConfigErrorKind::Syntax);
    assert_eq!(e.line(), Some(13), "{e}");
    assert!(!e.to_string().contains('\n'), "{e}");

    let text = BASE.replace("name = \"test\"", "name = \"test\"\nname = \"again\"");
    let e = parse_err(&text);
    assert_error(&e, ConfigErrorKind::Syntax, "group.name", 3);
    assert!(e.message().contains("duplicate key"), "{e}");
}

#[test]
fn debug_and_errors_never_show_passwords() {
    let config = parse(&format!("{BASE}{SECOND}")).unwrap();
    let debug = format!("{config:?} {config:#?}");
    assert!(!debug.contains(PASSWORD), "{debug}");
    assert!(debug.contains("mysql://repl:***@10.0.0.5:3306"), "{debug}");
    assert!(
        debug.contains("postgres://tidemark:***@127.0.0.1:5432/warehouse"),
        "{debug}"
    );
    assert_eq!(
        config.sources[0].url.to_string(),
        "mysql://repl:***@10.0.0.5:3306"
    );

    // A URL the driver rejects: the message must not quote the password.
    let text = BASE.replace("10.0.0.5:3306", "10.0.0.5:3306?bogus_param=1");
    let e = parse_err(&text);
    assert_error(&e, ConfigErrorKind::Invalid, "sources[0].url", 12);
    assert!(!format!("{e} {e:?}").contains(PASSWORD), "{e}");
}

#[test]
fn example_configs_load() {
    let vars: HashMap<&str, &str> = HashMap::from([
        ("TIDEMARK_MYSQL_URL", "mysql://root@127.0.0.1:33061"),
        (
            "TIDEMARK_WAREHOUSE_URL",
            "postgres://postgres@127.0.0.1:54321/warehouse",
        ),
        (
            "TIDEMARK_REDSHIFT_SECRET_ARN",
            "arn:aws:secretsmanager:ap-south-1:123456789012:secret:tidemark",
        ),
        ("ACME_IN_TXN_PASSWORD", PASSWORD),
        ("GLOBEX_SG_TXN_PASSWORD", PASSWORD),
        ("TIDEMARK_REDSHIFT_DATABASE", "demo_warehouse"),
        ("TIDEMARK_S3_ENDPOINT", "http://127.0.0.1:5000"),
        ("TIDEMARK_DATA_API_ENDPOINT", "http://127.0.0.1:5001"),
        ("WAREHOUSE_PASSWORD", PASSWORD),
        ("TIDEMARK_MASK_SALT", PASSWORD),
        ("ACME_IN_TXN_CREDENTIALS", "repl:pw-Zq81x!never-printed"),
        ("GLOBEX_SG_TXN_CREDENTIALS", "repl:pw-Zq81x!never-printed"),
        (
            "INITECH_US_TXN_CREDENTIALS",
            r#"{"username": "repl", "password": "pw-Zq81x!never-printed"}"#,
        ),
    ]);
    let env = |name: &str| vars.get(name).map(|v| v.to_string());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut loaded = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let config =
            Config::from_str_with_env(&text, &path, &env).unwrap_or_else(|e| panic!("{e}"));
        assert!(!config.sources.is_empty());
        assert!(!format!("{config:?}").contains(PASSWORD));
        loaded += 1;
    }
    assert!(loaded >= 2, "found {loaded} example configs");

    let fleet = Config::from_str_with_env(
        &std::fs::read_to_string(dir.join("fleet.toml")).unwrap(),
        &dir.join("fleet.toml"),
        &env,
    )
    .unwrap();
    assert!(
        fleet.inventory_problems.is_empty(),
        "{:?}",
        fleet.inventory_problems
    );
    let ids: Vec<(&str, bool)> = fleet
        .sources
        .iter()
        .map(|s| (s.id.as_str(), s.enabled))
        .collect();
    assert_eq!(
        ids,
        [
            ("acme-in-txn", true),
            ("globex-sg-txn", true),
            ("initech-us-txn", false)
        ]
    );
    assert_eq!(fleet.sources[1].staging_schema(), "globex_sg_txn");
    assert!(!format!("{fleet:?}").contains(PASSWORD));

    let local = Config::from_str_with_env(
        &std::fs::read_to_string(dir.join("local.toml")).unwrap(),
        &dir.join("local.toml"),
        &env,
    )
    .unwrap();
    assert!(matches!(local.warehouse, WarehouseConfig::Postgres { .. }));
    assert_eq!(local.sources[0].staging_schema(), "demo_local_shop");
    assert_eq!(local.sources[0].target_table, "{table}");

    let redshift = Config::from_str_with_env(
        &std::fs::read_to_string(dir.join("redshift.toml")).unwrap(),
        &dir.join("redshift.toml"),
        &env,
    )
    .unwrap();
    let globex = redshift.source("globex-sg-txn").unwrap();
    assert_eq!(globex.staging_schema(), "globex_sg_txn");
    assert_eq!(
        globex.target_table_name("billing", "invoices"),
        "billing__invoices"
    );
    assert_eq!(local.group.state_dir, dir.join("../.dev/state/local"));
}

#[test]
fn load_reads_files_and_reports_missing_ones() {
    let e = Config::load(Path::new("/nonexistent/tidemark.toml")).unwrap_err();
    assert_eq!(e.kind(), ConfigErrorKind::Read);
    assert!(
        e.to_string()
            .starts_with("/nonexistent/tidemark.toml: cannot read"),
        "{e}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.toml");
    let text = BASE
        .replace("${WH_PASSWORD}", "x")
        .replace("${ACME_PASSWORD}", "y")
        .replace(
            "state_dir = \"/tmp/tidemark-test\"",
            "state_dir = \"state\"",
        );
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(config.group.state_dir, dir.path().join("state"));
    assert_eq!(config.path, path);
}

/// `schemas/config.schema.json` lists exactly the keys the loader accepts, section by section.
#[test]
fn json_schema_matches_the_accepted_keys() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/config.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let keys_of = |object: &serde_json::Value| -> Vec<String> {
        let mut keys: Vec<String> = object["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    };
    // The loader names every accepted key when it meets an unknown one.
    let accepted = |text: String| -> Vec<String> {
        let e = parse_err(&text);
        assert_eq!(e.kind(), ConfigErrorKind::UnknownKey, "{e}");
        let expected = e.message().split("expected").nth(1).unwrap_or("");
        let mut keys: Vec<String> = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect();
        keys.sort();
        keys
    };
    let bogus = "bogus_key = 1\n";
    assert_eq!(keys_of(&schema), accepted(format!("{bogus}{BASE}")));
    assert_eq!(
        keys_of(&schema["properties"]["group"]),
        accepted(BASE.replace("[group]\n", &format!("[group]\n{bogus}")))
    );
    assert_eq!(
        keys_of(&schema["properties"]["warehouse"]),
        accepted(BASE.replace("[warehouse]\n", &format!("[warehouse]\n{bogus}")))
    );
    assert_eq!(
        keys_of(&schema["properties"]["batch"]),
        accepted(format!("{BASE}\n[batch]\n{bogus}"))
    );
    assert_eq!(
        keys_of(&schema["$defs"]["source"]),
        accepted(BASE.replace("[[sources]]\n", &format!("[[sources]]\n{bogus}")))
    );
    assert_eq!(
        keys_of(&schema["properties"]["fleet"]),
        accepted(format!("{BASE}\n[fleet]\ninventory = \"t.csv\"\n{bogus}"))
    );
}

#[test]
fn postgres_sources_get_a_slot_and_publication_named_after_their_id() {
    let postgres = |extra: &str| {
        format!(
            "{BASE}{extra}",
            extra = SECOND
                .replace("kind = \"mysql\"", "kind = \"postgres\"")
                .replace(
                    "mysql://repl:${ACME_PASSWORD}@10.0.0.6:3306",
                    "postgres://repl:${ACME_PASSWORD}@10.0.0.6:5432/app"
                )
                + extra
        )
    };
    let config = parse(&postgres("")).unwrap();
    let source = postgres_settings(&config.sources[1]);
    assert_eq!(source.slot, "tidemark_globex_sg_txn");
    assert_eq!(source.publication, "tidemark_globex_sg_txn");
    assert!(!source.publish_all_tables);

    let config = parse(&postgres(
        "slot = \"acme_slot\"\npublication = \"acme_pub\"\npublish_all_tables = true\n",
    ))
    .unwrap();
    let source = postgres_settings(&config.sources[1]);
    assert_eq!(
        (source.slot.as_str(), source.publication.as_str()),
        ("acme_slot", "acme_pub")
    );
    assert!(source.publish_all_tables);

    let text = postgres("slot = \"Acme-Slot\"\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        "sources[1].slot",
        line_of(&text, "slot ="),
    );
    assert!(e.message().contains("lowercase letters"), "{e}");

    // A MySQL source has no slot.
    let text = format!("{BASE}publication = \"p\"\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        "sources[0].publication",
        line_of(&text, "publication ="),
    );
}

/// [`BASE`] with its source made a Postgres source (same id, tenant, region, function).
fn postgres_base() -> String {
    BASE.replace("kind = \"mysql\"", "kind = \"postgres\"")
        .replace(
            "mysql://repl:${ACME_PASSWORD}@10.0.0.5:3306",
            "postgres://repl:${ACME_PASSWORD}@10.0.0.5:5432/app",
        )
}

#[test]
fn a_postgres_key_on_a_mysql_source_names_file_line_key_and_both_kinds() {
    for line in [
        "slot = \"acme_slot\"",
        "publication = \"acme_pub\"",
        "publish_all_tables = true",
    ] {
        let e = invalid_source_line(line);
        let key = line.split(" = ").next().unwrap();
        assert_eq!(
            e.message(),
            "belongs to kind = \"postgres\" sources; this source is kind = \"mysql\" (MySQL or MariaDB): remove the key, or set kind = \"postgres\" if the source is Postgres",
            "{key}: {e}"
        );
    }
    // The whole line an operator reads: file, line, key, then why and the fix.
    let text = with_source_line("slot = \"acme_slot\"");
    let line = line_of(&text, "slot =");
    assert!(
        parse_err(&text).to_string().starts_with(&format!(
            "conf/test.toml:{line}: key `sources[0].slot`: belongs to kind = \"postgres\" sources; this source is kind = \"mysql\""
        )),
        "{}",
        parse_err(&text)
    );
}

#[test]
fn a_mysql_key_on_a_postgres_source_names_file_line_key_and_both_kinds() {
    let text = postgres_base().replace(
        "snapshot = \"never\"",
        "snapshot = \"never\"\nserver_id = 4101",
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        "sources[0].server_id",
        line_of(&text, "server_id ="),
    );
    assert_eq!(
        e.message(),
        "belongs to kind = \"mysql\" sources; this source is kind = \"postgres\" (Postgres): remove the key, or set kind = \"mysql\" if the source is MySQL or MariaDB",
    );
    // Without it the same source loads, with its Postgres settings.
    let config = parse(&postgres_base()).unwrap();
    assert_eq!(config.sources[0].kind(), SourceKind::Postgres);
    assert!(config.sources[0].mysql().is_none());
    assert_eq!(
        postgres_settings(&config.sources[0]).slot,
        "tidemark_acme_in_txn"
    );
}

#[test]
fn an_unknown_source_kind_lists_the_kinds() {
    let text = BASE.replace("kind = \"mysql\"", "kind = \"oracle\"");
    let e = parse_err(&text);
    assert_eq!(
        e.message(),
        "unknown source kind `oracle`; expected \"mysql\" (MySQL or MariaDB) or \"postgres\" (Postgres)"
    );
}

/// [`BASE`] with its warehouse replaced by `warehouse` (the lines after `[warehouse]`).
fn with_warehouse(warehouse: &str) -> String {
    BASE.replace(
        "kind = \"postgres\"\nurl = \"postgres://tidemark:${WH_PASSWORD}@127.0.0.1:5432/warehouse\"\n",
        warehouse,
    )
}

/// A valid Redshift `[warehouse]` body.
const REDSHIFT: &str = "kind = \"redshift\"\nworkgroup = \"analytics\"\ndatabase = \"warehouse\"\n\
    s3_bucket = \"bucket\"\niam_role = \"arn:aws:iam::123456789012:role/copy\"\nregion = \"ap-south-1\"\n";

#[test]
fn a_redshift_key_on_a_postgres_warehouse_names_file_line_key_and_both_kinds() {
    let text = BASE.replace(
        "kind = \"postgres\"",
        "kind = \"postgres\"\ns3_bucket = \"b\"",
    );
    let e = parse_err(&text);
    assert_error(&e, ConfigErrorKind::Invalid, "warehouse.s3_bucket", 7);
    assert_eq!(
        e.message(),
        "belongs to kind = \"redshift\" warehouses; this warehouse is kind = \"postgres\" (Postgres): remove the key, or set kind = \"redshift\" if the warehouse is Amazon Redshift"
    );
}

#[test]
fn a_postgres_key_on_a_redshift_warehouse_names_file_line_key_and_both_kinds() {
    let config = parse(&with_warehouse(REDSHIFT)).unwrap();
    assert_eq!(config.warehouse.kind(), WarehouseKind::Redshift);

    let text = with_warehouse(&format!("{REDSHIFT}url = \"postgres://x@y/z\"\n"));
    let e = parse_err(&text);
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        "warehouse.url",
        line_of(&text, "url = \"postgres://x"),
    );
    assert_eq!(
        e.message(),
        "belongs to kind = \"postgres\" warehouses; this warehouse is kind = \"redshift\" (Amazon Redshift): remove the key, or set kind = \"postgres\" if the warehouse is Postgres"
    );
}

#[test]
fn an_unknown_warehouse_kind_lists_the_kinds() {
    let e = parse_err(&BASE.replace("kind = \"postgres\"", "kind = \"snowflake\""));
    assert_error(&e, ConfigErrorKind::Invalid, "warehouse.kind", 6);
    assert_eq!(
        e.message(),
        "unknown warehouse kind `snowflake`; expected \"postgres\" (Postgres), \"redshift\" (Amazon Redshift) or \"null\" (no warehouse: batches are discarded)"
    );
}

#[test]
fn a_null_warehouse_takes_no_other_key() {
    let config = parse(&with_warehouse("kind = \"null\"\n")).unwrap();
    assert!(matches!(config.warehouse, WarehouseConfig::Null));
    assert_eq!(config.warehouse.kind(), WarehouseKind::Null);

    for (line, owner, product) in [
        ("url = \"postgres://x@y/z\"", "postgres", "Postgres"),
        ("s3_bucket = \"b\"", "redshift", "Amazon Redshift"),
    ] {
        let text = with_warehouse(&format!("kind = \"null\"\n{line}\n"));
        let key = line.split(" = ").next().unwrap();
        let e = parse_err(&text);
        assert_error(
            &e,
            ConfigErrorKind::Invalid,
            &format!("warehouse.{key}"),
            line_of(&text, line),
        );
        assert_eq!(
            e.message(),
            format!(
                "belongs to kind = \"{owner}\" warehouses; this warehouse is kind = \"null\" (no warehouse: batches are discarded): remove the key, or set kind = \"{owner}\" if the warehouse is {product}"
            )
        );
    }
}

/// [`BASE`] with `[group] mask_salt` from `${MASK_SALT}` and `tail` (sub-tables of the source)
/// appended.
fn with_rules(tail: &str) -> String {
    format!(
        "{}{tail}",
        BASE.replace(
            "state_dir = \"/tmp/tidemark-test\"\n",
            "state_dir = \"/tmp/tidemark-test\"\nmask_salt = \"${MASK_SALT}\"\n"
        )
    )
}

fn parse_with_salt(text: &str) -> Result<Config, ConfigError> {
    Config::from_str_with_env(text, Path::new("conf/test.toml"), &|name| match name {
        "MASK_SALT" => Some(PASSWORD.to_string()),
        other => env(other),
    })
}

fn rules_err(text: &str) -> ConfigError {
    match parse_with_salt(text) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(e) => e,
    }
}

#[test]
fn table_names_override_the_target_table_template() {
    let text = with_rules(
        "\n[sources.table_names]\n\"shop.Customer\" = \"Customers\"\n\"shop.order_v2\" = \"orders\"\n",
    );
    let config = parse_with_salt(&text).unwrap();
    let source = &config.sources[0];
    assert_eq!(source.target_table_name("shop", "Customer"), "customers");
    assert_eq!(source.target_table_name("shop", "order_v2"), "orders");
    // Other tables follow the template; names are exact (case-sensitive).
    assert_eq!(source.target_table_name("shop", "customer"), "customer");
    assert_eq!(source.target_table_name("shop", "items"), "items");
    // Inline form too.
    let config =
        parse_with_salt(&with_source_line("table_names = { \"shop.a\" = \"b\" }")).unwrap();
    assert_eq!(config.sources[0].target_table_name("shop", "a"), "b");
}

#[test]
fn table_names_errors_name_the_entry_and_line() {
    for (entry, needle) in [
        ("\"shop\" = \"x\"", "not a table name"),
        ("\"shop.t*\" = \"x\"", "wildcard"),
        ("\"shop.tmp_1\" = \"x\"", "not replicated"),
        ("\"other.t\" = \"x\"", "not replicated"),
        ("\"shop.t\" = \"\"", "must not be empty"),
    ] {
        let text = with_rules(&format!("\n[sources.table_names]\n{entry}\n"));
        let e = rules_err(&text);
        let key = entry.split(" = ").next().unwrap();
        // Bare TOML keys are named without quotes.
        let key = if key.contains(['.', '*']) {
            key
        } else {
            key.trim_matches('"')
        };
        assert_error(
            &e,
            ConfigErrorKind::Invalid,
            &format!("sources[0].table_names.{key}"),
            line_of(&text, entry),
        );
        assert!(e.message().contains(needle), "{entry}: {e}");
    }
    let text = with_rules("\n[sources.table_names]\n\"shop.a\" = \"T\"\n\"shop.b\" = \"t\"\n");
    let e = rules_err(&text);
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        "sources[0].table_names.\"shop.b\"",
        line_of(&text, "\"shop.b\""),
    );
    assert!(e.message().contains("shop.a"), "{e}");
}

const RULES: &str = r#"
[[sources.columns]]
table = "shop.customers"
column = "ssn"
action = "exclude"

[[sources.columns]]
table = "shop.*"
column = "*email*"
action = "mask"

[[sources.columns]]
table = "shop.customers"
column = "nm"
action = "rename"
to = "name"
"#;

#[test]
fn column_rules_load_in_order_with_the_salt_kept_secret() {
    use tidemark::config::ColumnAction;
    let config = parse_with_salt(&with_rules(RULES)).unwrap();
    let rules = &config.sources[0].columns;
    let actions: Vec<(String, &str, ColumnAction)> = rules
        .rules
        .iter()
        .map(|r| (r.table.to_string(), r.column.as_str(), r.action.clone()))
        .collect();
    assert_eq!(
        actions,
        [
            ("shop.customers".to_string(), "ssn", ColumnAction::Exclude),
            ("shop.*".to_string(), "*email*", ColumnAction::Mask),
            (
                "shop.customers".to_string(),
                "nm",
                ColumnAction::Rename("name".into())
            ),
        ]
    );
    assert_eq!(
        rules.salt.as_ref().map(|s| s.expose().to_vec()),
        Some(PASSWORD.as_bytes().to_vec())
    );
    // Neither Debug of the config nor of the group shows the salt.
    assert!(!format!("{config:?}").contains(PASSWORD));
    assert!(config.group.mask_salt.is_some());
}

#[test]
fn column_rule_errors_name_the_rule_key_and_line() {
    let rule = |body: &str| format!("\n[[sources.columns]]\n{body}\n");
    let cases: [(String, ConfigErrorKind, &str, &str, &str); 8] = [
        (
            rule("table = \"shop\"\ncolumn = \"a\"\naction = \"exclude\""),
            ConfigErrorKind::Invalid,
            "sources[0].columns[0].table",
            "table = \"shop\"",
            "not a table pattern",
        ),
        (
            rule("table = \"shop.t\"\ncolumn = \"a\"\naction = \"drop\""),
            ConfigErrorKind::Invalid,
            "sources[0].columns[0].action",
            "action = \"drop\"",
            "unknown column action `drop`",
        ),
        (
            rule("table = \"shop.t\"\ncolumn = \"a\"\naction = \"rename\""),
            ConfigErrorKind::MissingKey,
            "sources[0].columns[0].to",
            "action = \"rename\"",
            "needs `to`",
        ),
        (
            rule("table = \"shop.t\"\ncolumn = \"a\"\naction = \"mask\"\nto = \"b\""),
            ConfigErrorKind::Invalid,
            "sources[0].columns[0].to",
            "to = \"b\"",
            "only action = \"rename\" takes `to`",
        ),
        (
            rule("table = \"shop.t\"\ncolumn = \"a*\"\naction = \"rename\"\nto = \"b\""),
            ConfigErrorKind::Invalid,
            "sources[0].columns[0].column",
            "column = \"a*\"",
            "wildcard",
        ),
        (
            rule("table = \"shop.t\"\ncolumn = \"a\"\naction = \"rename\"\nto = \"_tidemark_op\""),
            ConfigErrorKind::Invalid,
            "sources[0].columns[0].to",
            "to = \"_tidemark_op\"",
            "metadata",
        ),
        (
            format!(
                "{}{}",
                rule("table = \"shop.t\"\ncolumn = \"a\"\naction = \"rename\"\nto = \"x\""),
                rule("table = \"shop.t\"\ncolumn = \"b\"\naction = \"rename\"\nto = \"X\"")
            ),
            ConfigErrorKind::Invalid,
            "sources[0].columns[1].to",
            "to = \"X\"",
            "columns[0]",
        ),
        (
            rule("table = \"shop.t\"\ncolumn = \"a\"\naction = \"exclude\"\nextra = 1"),
            ConfigErrorKind::UnknownKey,
            "sources[0].columns[0].extra",
            "extra = 1",
            "unknown key",
        ),
    ];
    for (tail, kind, key, needle, message) in cases {
        let text = with_rules(&tail);
        let e = rules_err(&text);
        assert_error(&e, kind, key, line_of(&text, needle));
        assert!(e.message().contains(message), "{e}");
    }
}

#[test]
fn a_mask_rule_needs_the_group_salt() {
    let text = format!(
        "{BASE}\n[[sources.columns]]\ntable = \"shop.*\"\ncolumn = \"email\"\naction = \"mask\"\n"
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        ConfigErrorKind::MissingKey,
        "sources[0].columns[0].action",
        line_of(&text, "action = \"mask\""),
    );
    assert!(e.message().contains("mask_salt"), "{e}");
    // Set but its variable missing: the variable is named, never a value.
    let text = with_rules(RULES);
    let e = parse_err(&text);
    assert_error(
        &e,
        ConfigErrorKind::Env,
        "group.mask_salt",
        line_of(&text, "mask_salt"),
    );
    assert!(e.message().contains("MASK_SALT"), "{e}");
}

/// A `[fleet]` config in a temp dir beside an inventory with `lines`; returns the load result.
fn load_fleet(fleet: &str, lines: &str) -> (tempfile::TempDir, Result<Config, ConfigError>) {
    let dir = tempfile::tempdir().unwrap();
    let header = "tenant,region,function,kind,host,port,databases,credentials,enabled\n";
    std::fs::write(dir.path().join("tenants.csv"), format!("{header}{lines}")).unwrap();
    let text = BASE.split("[[sources]]").next().unwrap().to_string() + fleet;
    let path = dir.path().join("fleet.toml");
    let env = |name: &str| match name {
        "CREDS" => Some(format!("repl:{PASSWORD}")),
        other => env(other),
    };
    let result = Config::from_str_with_env(&text, &path, &env);
    (dir, result)
}

const FLEET: &str =
    "[fleet]\ninventory = \"tenants.csv\"\n\n[fleet.template]\nsnapshot = \"never\"\n";

#[test]
fn inventory_lines_become_sources_and_bad_lines_are_skipped_with_their_line() {
    let (_dir, config) = load_fleet(
        FLEET,
        "acme,in,txn,mysql,10.0.0.5,3306,shop,env:CREDS,\n\
         beta,in,txn,oracle,10.0.0.6,1521,shop,env:CREDS,\n\
         # a comment\n\
         acme,in,txn,mysql,10.0.0.7,3306,shop,env:CREDS,\n\
         gamma,in,txn,mysql,10.0.0.8,3306,shop,env:CREDS,no\n",
    );
    let config = config.unwrap();
    let ids: Vec<(&str, bool)> = config
        .sources
        .iter()
        .map(|s| (s.id.as_str(), s.enabled))
        .collect();
    assert_eq!(ids, [("acme-in-txn", true), ("gamma-in-txn", false)]);
    assert_eq!(config.sources[0].include[0].to_string(), "shop.*");
    assert_eq!(config.sources[0].snapshot, SnapshotMode::Never);
    let problems: Vec<String> = config
        .inventory_problems
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains("tenants.csv:3:") && problems[0].contains("`kind`"),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("tenants.csv:5:") && problems[1].contains("acme-in-txn"),
        "{problems:?}"
    );
    assert!(!format!("{config:?}{problems:?}").contains(PASSWORD));
}

#[test]
fn fleet_mistakes_name_the_key_or_the_inventory_line() {
    let (_dir, result) = load_fleet(&FLEET.replace("snapshot", "id = \"x\"\nsnapshot"), "");
    let e = result.unwrap_err();
    assert_eq!(e.key(), Some("fleet.template.id"), "{e}");

    let (_dir, result) = load_fleet(&FLEET.replace("tenants.csv", "missing.csv"), "");
    let e = result.unwrap_err();
    assert_eq!(e.key(), Some("fleet.inventory"), "{e}");
    assert!(e.to_string().contains("missing.csv"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tenants.csv"), "tenant,colour\n").unwrap();
    let text = BASE.split("[[sources]]").next().unwrap().to_string() + FLEET;
    let e = Config::from_str_with_env(&text, &dir.path().join("f.toml"), &env).unwrap_err();
    assert!(e.to_string().contains("tenants.csv:1:"), "{e}");
    assert!(e.to_string().contains("colour"), "{e}");
}

#[test]
fn lease_and_max_connections_are_checked() {
    let with_group = |line: &str| parse(&BASE.replace("[group]\n", &format!("[group]\n{line}\n")));
    assert_eq!(
        with_group("lease = \"15s\"").unwrap().group.lease,
        Some(Duration::from_secs(15))
    );
    let e = with_group("lease = \"1s\"").unwrap_err();
    assert_error(&e, ConfigErrorKind::Invalid, "group.lease", 2);
    let e = parse(&BASE.replace(
        "kind = \"postgres\"\n",
        "kind = \"postgres\"\nmax_connections = 0\n",
    ))
    .unwrap_err();
    assert_eq!(e.key(), Some("warehouse.max_connections"), "{e}");
}

/// `${file:...}` and `${aws-sm:...}` in a URL are kept as references (loading reads nothing)
/// and print as written; `[secrets]` says where Secrets Manager is.
#[test]
fn secret_references_load_unresolved_and_print_as_written() {
    let text = format!(
        "{}\n[secrets]\nregion = \"eu-west-1\"\nendpoint = \"http://127.0.0.1:4566\"\n",
        BASE.replace(
            "mysql://repl:${ACME_PASSWORD}@10.0.0.5:3306",
            "mysql://${aws-sm:prod/acme#username}:${aws-sm:prod/acme#password}@10.0.0.5:3306"
        )
        .replace(
            "postgres://tidemark:${WH_PASSWORD}@127.0.0.1:5432/warehouse",
            "${file:secrets/warehouse.url}"
        )
    );
    let config = parse(&text).unwrap();
    assert_eq!(config.secrets.region.as_deref(), Some("eu-west-1"));
    assert_eq!(
        config.secrets.endpoint.as_deref(),
        Some("http://127.0.0.1:4566")
    );
    let url = &config.sources[0].url;
    assert!(url.has_references() && !url.is_resolved());
    assert_eq!(
        url.to_string(),
        "mysql://${aws-sm:prod/acme#username}:***@10.0.0.5:3306"
    );
    let WarehouseConfig::Postgres(warehouse) = &config.warehouse else {
        panic!("postgres warehouse expected");
    };
    assert!(warehouse.url.has_references());
    // A reference is not a value: the same file with another secret value is the same config.
    assert_eq!(parse(&text).unwrap().sources[0].url, *url);
}

/// An unknown reference kind, and a secret reference in a key that is not a URL, are errors
/// naming the key and the line.
#[test]
fn bad_secret_references_name_key_and_line() {
    let text = BASE.replace("${ACME_PASSWORD}", "${vault:kv/acme}");
    let e = parse_err(&text);
    assert_error(
        &e,
        ConfigErrorKind::Env,
        "sources[0].url",
        line_of(&text, "vault:"),
    );
    assert!(
        e.message().contains("unknown reference kind `vault`"),
        "{e}"
    );
    assert!(e.message().contains("${aws-sm:SECRET_ID}"), "{e}");

    let text = BASE.replace(
        "state_dir = \"/tmp/tidemark-test\"",
        "state_dir = \"${file:dir.txt}\"",
    );
    let e = parse_err(&text);
    assert_error(
        &e,
        ConfigErrorKind::Env,
        "group.state_dir",
        line_of(&text, "state_dir"),
    );
    assert!(e.message().contains("only the `url`"), "{e}");

    let text = format!("{BASE}\n[secrets]\nendpoint = \"localhost:4566\"\n");
    let e = parse_err(&text);
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        "secrets.endpoint",
        line_of(&text, "endpoint"),
    );
}

/// Resolving fetches the file (relative to the config file); a missing file or a missing JSON
/// field is an error naming the config file, line and key and the reference, never a value.
#[tokio::test]
async fn file_references_resolve_and_their_errors_never_show_the_secret() {
    use tidemark::secrets::Freshness;

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("acme.json"),
        format!(r#"{{"username": "repl", "password": "{PASSWORD}"}}"#),
    )
    .unwrap();
    let text = BASE.replace(
        "mysql://repl:${ACME_PASSWORD}@10.0.0.5:3306",
        "mysql://repl:${file:acme.json#password}@10.0.0.5:3306",
    );
    let path = dir.path().join("tidemark.toml");
    let load = |text: &str| Config::from_str_with_env(text, &path, &env).unwrap();
    let config = load(&text);
    let resolved = config.sources[0]
        .url
        .resolve(Freshness::Cached)
        .await
        .unwrap();
    assert!(resolved.is_resolved());
    assert!(resolved.expose().contains("pw-Zq81x%21never-printed"));
    assert!(!format!("{resolved} {resolved:?}").contains("never-printed"));

    let line = line_of(&text, "acme.json");
    let wrong_field = load(&text.replace("#password", "#pasword"));
    let e = wrong_field.sources[0]
        .url
        .resolve(Freshness::Cached)
        .await
        .unwrap_err();
    let message = e.to_string();
    assert!(
        message.starts_with(&format!(
            "{}:{line}: key `sources[0].url`: secret file:",
            path.display()
        )),
        "{message}"
    );
    assert!(message.contains("no field `pasword`"), "{message}");
    assert!(!message.contains("never-printed"), "{message}");

    let missing = load(&text.replace("acme.json", "gone.json"));
    let e = missing.sources[0]
        .url
        .resolve(Freshness::Cached)
        .await
        .unwrap_err();
    let message = e.to_string();
    assert!(
        message.contains(&format!(":{line}: key `sources[0].url`")),
        "{message}"
    );
    assert!(message.contains("gone.json"), "{message}");
    assert_eq!(e.kind(), tidemark::error::ErrorKind::Operator);
}

/// A fleet inventory line with `aws-sm:SECRET_ID` credentials becomes a source whose URL
/// references the secret's `username` and `password`, fetched when the source connects.
#[test]
fn inventory_aws_sm_credentials_are_references() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tenants.csv"),
        "tenant,region,function,kind,host,port,databases,credentials\n\
         globex,sg,txn,mysql,10.0.0.9,3306,shop,aws-sm:prod/globex\n",
    )
    .unwrap();
    let text = format!(
        "{BASE}\n[fleet]\ninventory = \"tenants.csv\"\n\n[fleet.template]\nsnapshot = \"never\"\n"
    );
    let config = Config::from_str_with_env(&text, &dir.path().join("tidemark.toml"), &env).unwrap();
    assert!(
        config.inventory_problems.is_empty(),
        "{:?}",
        config.inventory_problems
    );
    let url = &config.source("globex-sg-txn").unwrap().url;
    assert!(url.has_references() && !url.is_resolved());
    assert_eq!(
        url.to_string(),
        "mysql://${aws-sm:prod/globex#username}:***@10.0.0.9:3306"
    );
}
