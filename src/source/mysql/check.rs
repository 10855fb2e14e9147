//! Prerequisite checks for a MySQL/MariaDB source, used by `tidemark check`.
//!
//! [`check_mysql_source`] connects once with the source's own URL and reports every unmet
//! prerequisite at once, each with the statement or setting that fixes it: binlog settings
//! (`log_bin`, `binlog_format`, `binlog_row_image`, `binlog_row_metadata`, `log_bin_compress`,
//! `binlog_row_value_options`, `binlog_checksum`), binlog retention, GTID mode, the replica
//! server id, and the connecting user's grants. It never returns an error: a failure to connect
//! or to query is itself a failed item.
//!
//! Guarantees: the report never contains the URL's password (server and driver messages are
//! scrubbed with [`SecretUrl::scrub`]) nor password hashes from `SHOW GRANTS`; the checks only
//! read (no `SET`, no `GRANT`). The pure evaluation steps ([`evaluate_settings`],
//! [`evaluate_grants`], [`Grant::parse`]) are public so they can be tested without a server.
//! What is checked and why is documented in `docs/check.md`.

use std::collections::HashMap;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};

use crate::check::report::{CONNECTION_ITEM, QUERIES_ITEM};
pub use crate::check::{CheckItem, CheckReport, CheckStatus};
use crate::config::{SecretUrl, SourceConfig};
use crate::source::mysql::config::MysqlSettings;

/// Knobs of [`check_mysql_source_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOptions {
    /// Longest wait for the TCP connection and handshake (default 10s).
    pub connect_timeout: Duration,
    /// Longest wait for all checks after connecting (default 30s).
    pub query_timeout: Duration,
    /// Binlog retention below this (and not 0 = never purged) is a warning (default 72h: a
    /// weekend-long outage must not lose the source's position).
    pub min_binlog_retention: Duration,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            connect_timeout: Duration::from_secs(10),
            query_timeout: Duration::from_secs(30),
            min_binlog_retention: Duration::from_secs(72 * 3600),
        }
    }
}

/// Checks every prerequisite of a MySQL/MariaDB source with default [`CheckOptions`].
pub async fn check_mysql_source(source: &SourceConfig) -> CheckReport {
    check_mysql_source_with(source, &CheckOptions::default()).await
}

/// Checks every prerequisite of a MySQL/MariaDB source; never fails, see [`CheckReport`].
pub async fn check_mysql_source_with(source: &SourceConfig, options: &CheckOptions) -> CheckReport {
    let mut report = CheckReport::for_source(&source.id, source.url.to_string());
    let Some(settings) = source.mysql() else {
        report.items.push(CheckItem::new(
            CONNECTION_ITEM,
            CheckStatus::Fail,
            format!(
                "source is kind = \"{}\"; this check is for kind = \"mysql\"",
                source.kind()
            ),
        ));
        return report;
    };
    let mut conn = match connect(source, options).await {
        Ok(conn) => conn,
        Err(error) => {
            report.items.push(connection_failure(&error, &source.url));
            return report;
        }
    };
    let inspected = tokio::time::timeout(
        options.query_timeout,
        inspect(&mut conn, source, settings, options, &mut report.items),
    )
    .await;
    match inspected {
        Ok(Ok(())) => {}
        Ok(Err(error)) => report.items.push(
            CheckItem::new(
                QUERIES_ITEM,
                CheckStatus::Fail,
                format!("checking stopped: {}", source.url.scrub(&error.to_string())),
            )
            .with_fix("the items above were checked; fix this error and run the check again"),
        ),
        Err(_) => report.items.push(CheckItem::new(
            QUERIES_ITEM,
            CheckStatus::Fail,
            format!(
                "the server did not answer within {:?}; the items above were checked",
                options.query_timeout
            ),
        )),
    }
    // Best effort: the report is complete whether or not the goodbye succeeds, and a connection
    // left mid-query by a timeout must not hang the check.
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.disconnect()).await;
    report
}

/// Why the check could not talk to the server.
#[derive(Debug, thiserror::Error)]
enum CheckError {
    /// The URL or its TLS settings cannot be used, or the server failed TLS verification: the
    /// message names the host, the setting and the fix.
    #[error("{0}")]
    Setup(String),
    /// Connecting took longer than the connect timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The driver or the server reported an error.
    #[error("{0}")]
    Mysql(#[from] mysql_async::Error),
    /// A query failed on the server, or its answer cannot be interpreted.
    #[error("{query} failed: {what}")]
    Query { query: &'static str, what: String },
}

async fn connect(source: &SourceConfig, options: &CheckOptions) -> Result<Conn, CheckError> {
    let (opts, tls) =
        crate::tls::mysql_opts(&source.url).map_err(|e| CheckError::Setup(e.to_string()))?;
    let host = opts.ip_or_hostname().to_string();
    match tokio::time::timeout(options.connect_timeout, Conn::new(opts)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(error)) => Err(match tls.explain(&host, &error.to_string()) {
            Some(explained) => CheckError::Setup(explained),
            None => CheckError::Mysql(error),
        }),
        Err(_) => Err(CheckError::Timeout(options.connect_timeout)),
    }
}

/// The failed `connection` item for a connect error, scrubbed of the password.
fn connection_failure(error: &CheckError, url: &SecretUrl) -> CheckItem {
    const ER_DBACCESS_DENIED: u16 = 1044;
    const ER_ACCESS_DENIED: u16 = 1045;
    const ER_BAD_DB: u16 = 1049;
    const ER_HOST_NOT_PRIVILEGED: u16 = 1130;
    let (detail, fix) = match error {
        CheckError::Mysql(mysql_async::Error::Server(e)) => {
            let detail = format!(
                "server refused the connection: ERROR {} ({}): {}",
                e.code, e.state, e.message
            );
            let fix = match e.code {
                ER_ACCESS_DENIED => Some(
                    "check the user name and password in the source url (the password usually comes from an environment variable); to reset it: ALTER USER 'user'@'host' IDENTIFIED BY 'new-password'; with the account named in the message",
                ),
                ER_HOST_NOT_PRIVILEGED => Some(
                    "the user may not connect from this host: CREATE USER 'user'@'%' IDENTIFIED BY 'password'; (or name this host instead of %)",
                ),
                ER_BAD_DB | ER_DBACCESS_DENIED => Some(
                    "remove the database from the source url (tidemark needs none) or fix its name",
                ),
                _ => None,
            };
            (detail, fix)
        }
        CheckError::Mysql(mysql_async::Error::Io(e)) => (
            format!(
                "cannot reach the server: {}",
                e.to_string().trim_start_matches("Input/output error: ")
            ),
            Some(
                "check host and port in the source url, that the server listens on TCP there (bind_address, port, skip_networking) and that no firewall blocks this host",
            ),
        ),
        CheckError::Timeout(after) => (
            format!("no answer from the server within {after:?}"),
            Some(
                "check host and port in the source url and that no firewall silently drops the connection",
            ),
        ),
        CheckError::Setup(message) => (
            message.clone(),
            Some(
                "fix the source url: mysql://user:password@host:3306[?ssl-mode=VERIFY_IDENTITY&ssl-ca=/path/to/ca.pem]",
            ),
        ),
        other => (format!("cannot connect: {other}"), None),
    };
    let mut item = CheckItem::new(CONNECTION_ITEM, CheckStatus::Fail, url.scrub(&detail));
    item.fix = fix.map(str::to_string);
    item
}

/// Which server family: they name privileges and variables differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Oracle MySQL (and Percona, Aurora MySQL, ...).
    MySql,
    /// MariaDB.
    MariaDb,
}

/// What the checks know about the server: its family, version and global variables.
#[derive(Debug, Clone)]
pub struct ServerFacts {
    /// MySQL or MariaDB.
    pub flavor: Flavor,
    /// `(major, minor, patch)` as reported in the handshake.
    pub version: (u16, u16, u16),
    /// Global variables by lowercase name (only those the checks read).
    pub variables: HashMap<String, String>,
}

impl ServerFacts {
    /// The value of a global variable, if the server has it.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.variables.get(name).map(String::as_str)
    }

    fn is_mysql8(&self) -> bool {
        self.flavor == Flavor::MySql && self.version >= (8, 0, 11)
    }

    /// True when the binlog-read privilege is called BINLOG MONITOR (MariaDB 10.5.2+).
    fn has_binlog_monitor(&self) -> bool {
        self.flavor == Flavor::MariaDb && self.version >= (10, 5, 2)
    }

    /// Amazon RDS / Aurora keep their binaries under /rdsdbbin.
    fn is_rds(&self) -> bool {
        self.var("basedir")
            .is_some_and(|d| d.starts_with("/rdsdbbin"))
    }

    /// How to change a dynamic variable for good on this server.
    fn set_fix(&self, var: &str, sql_value: &str, cnf_value: &str) -> String {
        if self.is_rds() {
            format!(
                "set {var} = {cnf_value} in the DB parameter group (RDS/Aurora) and reboot if the parameter is static"
            )
        } else if self.is_mysql8() {
            format!("SET PERSIST {var} = {sql_value};")
        } else {
            format!(
                "SET GLOBAL {var} = {sql_value}; and add `{var} = {cnf_value}` under [mysqld] in my.cnf so it survives a restart"
            )
        }
    }
}

/// Variables read by the checks.
const VARIABLES: [&str; 20] = [
    "version",
    "version_comment",
    "basedir",
    "server_id",
    "log_bin",
    "binlog_format",
    "binlog_row_image",
    "binlog_row_metadata",
    "log_bin_compress",
    "binlog_row_value_options",
    "binlog_checksum",
    "gtid_mode",
    "enforce_gtid_consistency",
    "gtid_binlog_pos",
    "gtid_domain_id",
    "gtid_strict_mode",
    "binlog_expire_logs_seconds",
    "expire_logs_days",
    "max_binlog_total_size",
    "binlog_space_limit",
];

/// Runs every query and appends the items; stops at the first query error.
async fn inspect(
    conn: &mut Conn,
    source: &SourceConfig,
    settings: &MysqlSettings,
    options: &CheckOptions,
    items: &mut Vec<CheckItem>,
) -> Result<(), CheckError> {
    let names = VARIABLES.map(|v| format!("'{v}'")).join(", ");
    let rows = text_rows(
        conn,
        "SHOW GLOBAL VARIABLES",
        &format!("SHOW GLOBAL VARIABLES WHERE Variable_name IN ({names})"),
    )
    .await?;
    let variables: HashMap<String, String> = rows
        .into_iter()
        .filter_map(|row| match row.as_slice() {
            [Some(name), Some(value)] => Some((name.to_lowercase(), value.clone())),
            [Some(name), None] => Some((name.to_lowercase(), String::new())),
            _ => None,
        })
        .collect();
    let version_text = variables.get("version").cloned().unwrap_or_default();
    let flavor = if version_text.contains("MariaDB") {
        Flavor::MariaDb
    } else {
        Flavor::MySql
    };
    let server = ServerFacts {
        flavor,
        version: conn.server_version(),
        variables,
    };

    let account = current_account(conn).await?;
    let comment = server
        .var("version_comment")
        .map(|c| format!(" ({c})"))
        .unwrap_or_default();
    items.push(CheckItem::new(
        CONNECTION_ITEM,
        CheckStatus::Pass,
        format!(
            "{} {version_text}{comment} as {}",
            match flavor {
                Flavor::MySql => "MySQL",
                Flavor::MariaDb => "MariaDB",
            },
            account.sql()
        ),
    ));
    items.extend(evaluate_settings(&server, settings, options));

    let grants: Vec<Grant> = text_rows(conn, "SHOW GRANTS", "SHOW GRANTS FOR CURRENT_USER()")
        .await?
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .filter_map(|line| Grant::parse(&line))
        .collect();
    let databases: Vec<String> = text_rows(
        conn,
        "information_schema.SCHEMATA",
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA",
    )
    .await?
    .into_iter()
    .filter_map(|row| row.into_iter().next().flatten())
    .collect();
    items.extend(evaluate_grants(
        &server, &account, &grants, source, &databases,
    ));
    Ok(())
}

/// Runs `sql` and returns every row as text (NULL as `None`), never panicking on odd values.
async fn text_rows(
    conn: &mut Conn,
    what: &'static str,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, CheckError> {
    let rows: Vec<Row> = conn.query(sql).await.map_err(|e| match e {
        mysql_async::Error::Server(server) => CheckError::Query {
            query: what,
            what: format!(
                "ERROR {} ({}): {}",
                server.code, server.state, server.message
            ),
        },
        other => CheckError::Mysql(other),
    })?;
    Ok(rows
        .into_iter()
        .map(|row| {
            row.unwrap_raw()
                .into_iter()
                .map(|value| value.and_then(value_text))
                .collect()
        })
        .collect())
}

fn value_text(value: Value) -> Option<String> {
    match value {
        Value::NULL => None,
        Value::Bytes(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Value::Int(n) => Some(n.to_string()),
        Value::UInt(n) => Some(n.to_string()),
        Value::Float(n) => Some(n.to_string()),
        Value::Double(n) => Some(n.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// The account the server authenticated us as (`CURRENT_USER()`), for GRANT statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// User name.
    pub user: String,
    /// Host part of the account (`%`, `127.0.0.1`, ...).
    pub host: String,
}

impl Account {
    /// Parses `user@host` as returned by `CURRENT_USER()` (the user may contain `@`).
    pub fn parse(text: &str) -> Option<Account> {
        let (user, host) = text.rsplit_once('@')?;
        Some(Account {
            user: user.to_string(),
            host: host.to_string(),
        })
    }

    /// `'user'@'host'`, quoted for SQL.
    pub fn sql(&self) -> String {
        format!(
            "'{}'@'{}'",
            self.user.replace('\'', "''"),
            self.host.replace('\'', "''")
        )
    }
}

async fn current_account(conn: &mut Conn) -> Result<Account, CheckError> {
    let rows = text_rows(conn, "SELECT CURRENT_USER()", "SELECT CURRENT_USER()").await?;
    let text = rows
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next().flatten())
        .unwrap_or_default();
    Account::parse(&text).ok_or(CheckError::Query {
        query: "SELECT CURRENT_USER()",
        what: format!("`{text}` is not user@host"),
    })
}

/// Checks the binlog settings, retention, GTID mode of `server`, and that it accepts the replica
/// server id of `settings`.
pub fn evaluate_settings(
    server: &ServerFacts,
    settings: &MysqlSettings,
    options: &CheckOptions,
) -> Vec<CheckItem> {
    let mut items = Vec::new();
    let is = |var: &str, want: &str| {
        server
            .var(var)
            .is_some_and(|v| v.eq_ignore_ascii_case(want))
    };

    // log_bin: read-only at runtime.
    items.push(if is("log_bin", "ON") || is("log_bin", "1") {
        CheckItem::new("log_bin", CheckStatus::Pass, "ON")
    } else {
        CheckItem::new("log_bin", CheckStatus::Fail, "binary logging is OFF; there is nothing to replicate from")
            .with_fix(if server.is_rds() {
                "enable automated backups (backup retention > 0) on the RDS instance; that turns on the binlog".to_string()
            } else {
                "add `log_bin = mysql-bin` under [mysqld] in my.cnf and restart the server (log_bin cannot be set at runtime)".to_string()
            })
    });

    items.push(required_value(
        server,
        "binlog_format",
        "ROW",
        "'ROW'",
        "connections opened before the change keep their old format until they reconnect",
    ));
    items.push(required_value(
        server,
        "binlog_row_image",
        "FULL",
        "'FULL'",
        "",
    ));

    // binlog_row_metadata: MySQL 8.0.1+ / MariaDB 10.5+.
    items.push(match server.var("binlog_row_metadata") {
        None => CheckItem::new(
            "binlog_row_metadata",
            CheckStatus::Fail,
            "this server version has no binlog_row_metadata; tidemark reads column names and keys from FULL row metadata",
        )
        .with_fix(match server.flavor {
            Flavor::MySql => "upgrade to MySQL 8.0.1 or later, then set binlog_row_metadata = FULL",
            Flavor::MariaDb => "upgrade to MariaDB 10.5 or later, then set binlog_row_metadata = FULL",
        }),
        Some(_) => required_value(server, "binlog_row_metadata", "FULL", "'FULL'", ""),
    });

    if server.flavor == Flavor::MariaDb {
        items.push(match server.var("log_bin_compress") {
            Some(v) if v.eq_ignore_ascii_case("ON") => CheckItem::new(
                "log_bin_compress",
                CheckStatus::Fail,
                "is ON; compressed binlog events cannot be decoded",
            )
            .with_fix(server.set_fix("log_bin_compress", "OFF", "OFF")),
            Some(v) => CheckItem::new("log_bin_compress", CheckStatus::Pass, v.to_string()),
            None => CheckItem::new(
                "log_bin_compress",
                CheckStatus::Pass,
                "not supported by this server (never compressed)",
            ),
        });
    }
    if server.flavor == Flavor::MySql
        && let Some(v) = server.var("binlog_row_value_options")
    {
        items.push(if v.to_ascii_uppercase().contains("PARTIAL_JSON") {
            // Partial JSON diffs are applied to the before image, which FULL row images carry
            // (binlog_row_image is checked on its own).
            CheckItem::new(
                "binlog_row_value_options",
                CheckStatus::Info,
                "PARTIAL_JSON: JSON updates are logged as diffs; tidemark applies them to the full before image",
            )
        } else {
            CheckItem::new(
                "binlog_row_value_options",
                CheckStatus::Pass,
                if v.is_empty() { "'' (full JSON values)" } else { v },
            )
        });
    }

    items.push(match server.var("binlog_checksum") {
        Some(v) if v.eq_ignore_ascii_case("CRC32") => CheckItem::new(
            "binlog_checksum",
            CheckStatus::Pass,
            "CRC32 (every event is verified)",
        ),
        Some(v) if v.eq_ignore_ascii_case("NONE") => CheckItem::new(
            "binlog_checksum",
            CheckStatus::Pass,
            "NONE (events carry no checksum; CRC32 would let tidemark detect corruption)",
        ),
        Some(v) => CheckItem::new(
            "binlog_checksum",
            CheckStatus::Warn,
            format!("unknown value {v}"),
        )
        .with_fix(server.set_fix("binlog_checksum", "'CRC32'", "CRC32")),
        None => CheckItem::new(
            "binlog_checksum",
            CheckStatus::Pass,
            "not reported (pre-5.6 server: no checksums)",
        ),
    });

    items.push(gtid_item(server));
    items.extend(retention_items(server, options));

    let ours = settings.server_id;
    items.push(match server.var("server_id").and_then(|v| v.parse::<u32>().ok()) {
        Some(theirs) if theirs == ours => CheckItem::new(
            "server_id",
            CheckStatus::Fail,
            format!("the source server's own server_id is {theirs}, the same as tidemark's replica id; the server refuses such a replica"),
        )
        .with_fix("set a different `server_id` for this source in the tidemark config (any unused id from 1 to 4294967295)"),
        Some(theirs) => CheckItem::new(
            "server_id",
            CheckStatus::Pass,
            format!("tidemark connects as replica {ours} (server is {theirs}); it must differ from every other replica of this server"),
        ),
        None => CheckItem::new("server_id", CheckStatus::Info, format!("tidemark connects as replica {ours}")),
    });
    items
}

/// A variable that must equal `want`.
fn required_value(
    server: &ServerFacts,
    var: &str,
    want: &str,
    sql_value: &str,
    note: &str,
) -> CheckItem {
    match server.var(var) {
        Some(v) if v.eq_ignore_ascii_case(want) => {
            CheckItem::new(var, CheckStatus::Pass, v.to_string())
        }
        found => {
            let found = found.unwrap_or("not set");
            let note = if note.is_empty() {
                String::new()
            } else {
                format!("; {note}")
            };
            CheckItem::new(
                var,
                CheckStatus::Fail,
                format!("is {found}; tidemark needs {want}{note}"),
            )
            .with_fix(server.set_fix(var, sql_value, want))
        }
    }
}

fn gtid_item(server: &ServerFacts) -> CheckItem {
    match server.flavor {
        Flavor::MariaDb => CheckItem::new(
            "gtid",
            CheckStatus::Info,
            format!(
                "MariaDB GTIDs (always on): gtid_binlog_pos = {}, gtid_domain_id = {}, gtid_strict_mode = {}",
                server
                    .var("gtid_binlog_pos")
                    .filter(|v| !v.is_empty())
                    .unwrap_or("(empty)"),
                server.var("gtid_domain_id").unwrap_or("?"),
                server.var("gtid_strict_mode").unwrap_or("?"),
            ),
        ),
        Flavor::MySql => match server.var("gtid_mode") {
            Some(mode) if mode.eq_ignore_ascii_case("ON") => CheckItem::new(
                "gtid",
                CheckStatus::Info,
                "gtid_mode = ON: positions are GTID sets and survive a failover to a replica",
            ),
            mode => CheckItem::new(
                "gtid",
                CheckStatus::Info,
                format!(
                    "gtid_mode = {}: positions are binlog file and offset, valid on this server only (gtid_mode = ON and enforce_gtid_consistency = ON would let tidemark follow a failover)",
                    mode.unwrap_or("not supported")
                ),
            ),
        },
    }
}

/// Retention by age (binlog_expire_logs_seconds / expire_logs_days) and by size (MariaDB 11.4+
/// max_binlog_total_size).
fn retention_items(server: &ServerFacts, options: &CheckOptions) -> Vec<CheckItem> {
    let mut items = Vec::new();
    let seconds = server
        .var("binlog_expire_logs_seconds")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let days = server
        .var("expire_logs_days")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    // A non-zero binlog_expire_logs_seconds wins over expire_logs_days (MySQL 8; in MariaDB
    // 10.6+ the two are kept in step).
    let retention = if seconds > 0 {
        Some(Duration::from_secs(seconds))
    } else if days > 0.0 {
        Some(Duration::from_secs_f64(days * 86_400.0))
    } else {
        None
    };
    let min = options.min_binlog_retention;
    let min_hours = min.as_secs() / 3600;
    let fix = if server.is_rds() {
        format!("CALL mysql.rds_set_configuration('binlog retention hours', {min_hours});")
    } else if server.var("binlog_expire_logs_seconds").is_some() {
        server.set_fix(
            "binlog_expire_logs_seconds",
            &min.as_secs().to_string(),
            &min.as_secs().to_string(),
        )
    } else {
        let days = min.as_secs().div_ceil(86_400);
        server.set_fix("expire_logs_days", &days.to_string(), &days.to_string())
    };
    items.push(match retention {
        _ if server.is_rds() => CheckItem::new(
            "binlog_retention",
            CheckStatus::Warn,
            "Amazon RDS/Aurora purges binlogs by 'binlog retention hours' (default: as soon as possible), which this check cannot read; see CALL mysql.rds_show_configuration;",
        )
        .with_fix(fix),
        None => CheckItem::new("binlog_retention", CheckStatus::Pass, "binlogs are never purged by age"),
        Some(r) if r < min => CheckItem::new(
            "binlog_retention",
            CheckStatus::Warn,
            format!(
                "binlogs are purged after {}; an outage longer than that loses tidemark's position (recommended: at least {})",
                human(r),
                human(min)
            ),
        )
        .with_fix(fix),
        Some(r) => CheckItem::new("binlog_retention", CheckStatus::Pass, format!("binlogs are kept {}", human(r))),
    });
    let size_var = ["max_binlog_total_size", "binlog_space_limit"]
        .into_iter()
        .find_map(|var| Some((var, server.var(var)?.trim().parse::<u64>().ok()?)));
    if let Some((var, limit)) = size_var
        && limit > 0
    {
        items.push(
            CheckItem::new(
                "binlog_size_limit",
                CheckStatus::Warn,
                format!("{var} = {limit}: binlogs are purged once they exceed {limit} bytes in total, however young; a busy or long outage can lose tidemark's position"),
            )
            .with_fix(server.set_fix(var, "0", "0")),
        );
    }
    items
}

/// `72h`, `30 days`, `90m`, ...
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 2 * 86_400 && secs.is_multiple_of(86_400) {
        format!("{} days", secs / 86_400)
    } else if secs >= 3600 && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs >= 60 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// What one `SHOW GRANTS` line grants (password hashes and options are dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Privilege names, uppercase (`SELECT`, `REPLICATION SLAVE`, `ALL PRIVILEGES`); column-level
    /// privileges are left out (they never cover a whole table).
    pub privileges: Vec<String>,
    /// What the privileges apply to.
    pub scope: GrantScope,
}

/// The object of a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantScope {
    /// `*.*`.
    Global,
    /// `db.*`; the name is a LIKE pattern in grants (`_` and `%` wildcards, `\` escapes).
    Database(String),
    /// `db.table`.
    Table(String, String),
    /// A routine, a proxy grant or a role: never relevant to these checks.
    Other,
}

impl Grant {
    /// Parses one line of `SHOW GRANTS` output; `None` when it is not a privilege grant.
    pub fn parse(line: &str) -> Option<Grant> {
        let rest = line.trim().strip_prefix("GRANT ")?;
        let on = find_top_level(rest, " ON ")?;
        let (privileges, rest) = (&rest[..on], &rest[on + 4..]);
        let to = find_top_level(rest, " TO ")?;
        let object = rest[..to].trim();
        let privileges = split_top_level(privileges)
            .into_iter()
            .map(str::trim)
            .filter(|p| !p.contains('('))
            .map(|p| {
                p.split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_uppercase()
            })
            .collect();
        Some(Grant {
            privileges,
            scope: parse_object(object),
        })
    }

    fn has(&self, names: &[&str]) -> bool {
        self.privileges
            .iter()
            .any(|p| p == "ALL PRIVILEGES" || p == "ALL" || names.contains(&p.as_str()))
    }
}

/// Byte offset of `needle` outside backticks, quotes and parentheses.
fn find_top_level(text: &str, needle: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let (mut depth, mut quote) = (0usize, None::<u8>);
    for (i, &b) in bytes.iter().enumerate() {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None => match b {
                b'`' | b'\'' | b'"' => quote = Some(b),
                b'(' => depth += 1,
                b')' => depth = depth.saturating_sub(1),
                _ if depth == 0 && text[i..].starts_with(needle) => return Some(i),
                _ => {}
            },
        }
    }
    None
}

/// Splits a privilege list at commas outside parentheses and quotes.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quote, mut start) = (0usize, None::<char>, 0);
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '`' | '\'' | '"' => quote = Some(c),
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                ',' if depth == 0 => {
                    parts.push(&text[start..i]);
                    start = i + 1;
                }
                _ => {}
            },
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Parses `*.*`, `` `db`.* ``, `` `db`.`t` ``, `db.t`; anything else is [`GrantScope::Other`].
fn parse_object(object: &str) -> GrantScope {
    if object == "*.*" || object == "*" {
        return GrantScope::Global;
    }
    if object.starts_with("PROCEDURE ")
        || object.starts_with("FUNCTION ")
        || object.starts_with("PACKAGE ")
    {
        return GrantScope::Other;
    }
    let Some((db, rest)) = take_identifier(object) else {
        return GrantScope::Other;
    };
    let Some(rest) = rest.strip_prefix('.') else {
        return GrantScope::Other;
    };
    if rest == "*" {
        return GrantScope::Database(db);
    }
    match take_identifier(rest) {
        Some((table, "")) => GrantScope::Table(db, table),
        _ => GrantScope::Other,
    }
}

/// Takes a backquoted (`` `a``b` ``) or bare identifier from the front of `text`.
fn take_identifier(text: &str) -> Option<(String, &str)> {
    if let Some(body) = text.strip_prefix('`') {
        let mut name = String::new();
        let mut chars = body.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '`' {
                if let Some(&(_, '`')) = chars.peek() {
                    chars.next();
                    name.push('`');
                } else {
                    return Some((name, &body[i + 1..]));
                }
            } else {
                name.push(c);
            }
        }
        None
    } else {
        let end = text.find('.').unwrap_or(text.len());
        (end > 0 && !text[..end].contains('*')).then(|| (text[..end].to_string(), &text[end..]))
    }
}

/// MySQL LIKE match as used by database-level grants: `%` any run, `_` one character, `\`
/// escapes the next character.
fn like_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('%', rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
            Some(('_', rest)) => !t.is_empty() && go(rest, &t[1..]),
            Some(('\\', rest)) if !rest.is_empty() => {
                t.first() == Some(&rest[0]) && go(&rest[1..], &t[1..])
            }
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    go(&p, &t)
}

/// Checks the grants tidemark needs: REPLICATION SLAVE (binlog dump), REPLICATION CLIENT or
/// BINLOG MONITOR on MariaDB 10.5.2+ (SHOW BINARY LOGS / SHOW MASTER STATUS), and SELECT on
/// every included database visible in `databases`.
pub fn evaluate_grants(
    server: &ServerFacts,
    account: &Account,
    grants: &[Grant],
    source: &SourceConfig,
    databases: &[String],
) -> Vec<CheckItem> {
    let mut items = Vec::new();
    let to = account.sql();
    let global = |names: &[&str]| {
        grants
            .iter()
            .any(|g| g.scope == GrantScope::Global && g.has(names))
    };

    items.push(if global(&["REPLICATION SLAVE", "REPLICATION REPLICA"]) {
        CheckItem::new(
            "privilege REPLICATION SLAVE",
            CheckStatus::Pass,
            "granted on *.* (reads the binlog stream)",
        )
    } else {
        CheckItem::new(
            "privilege REPLICATION SLAVE",
            CheckStatus::Fail,
            format!(
                "{to} lacks REPLICATION SLAVE on *.*; without it the server refuses the binlog dump"
            ),
        )
        .with_fix(format!("GRANT REPLICATION SLAVE ON *.* TO {to};"))
    });

    let (monitor, accepted): (&str, &[&str]) = if server.has_binlog_monitor() {
        (
            "BINLOG MONITOR",
            &["BINLOG MONITOR", "REPLICATION CLIENT", "SUPER"],
        )
    } else {
        ("REPLICATION CLIENT", &["REPLICATION CLIENT", "SUPER"])
    };
    let name = format!("privilege {monitor}");
    items.push(if global(accepted) {
        CheckItem::new(&name, CheckStatus::Pass, "granted on *.* (SHOW BINARY LOGS, SHOW MASTER STATUS)")
    } else {
        CheckItem::new(
            &name,
            CheckStatus::Fail,
            format!("{to} lacks {monitor} on *.*; without it tidemark cannot list binlogs or read the current position"),
        )
        .with_fix(format!("GRANT {monitor} ON *.* TO {to};"))
    });

    items.extend(select_items(account, grants, source, databases));
    items
}

/// SELECT on each included database.
fn select_items(
    account: &Account,
    grants: &[Grant],
    source: &SourceConfig,
    databases: &[String],
) -> Vec<CheckItem> {
    let to = account.sql();
    if grants
        .iter()
        .any(|g| g.scope == GrantScope::Global && g.has(&["SELECT"]))
    {
        return vec![CheckItem::new(
            "privilege SELECT",
            CheckStatus::Pass,
            "granted on *.* (every included database)",
        )];
    }
    let db_covered = |db: &str| {
        grants.iter().any(|g| match &g.scope {
            GrantScope::Database(pattern) => g.has(&["SELECT"]) && like_match(pattern, db),
            _ => false,
        })
    };
    // Databases to check: literal include patterns, and visible databases matching the others.
    let mut wanted: Vec<(String, bool)> = Vec::new(); // (database, exists)
    let mut unmatched_globs = Vec::new();
    for pattern in &source.include {
        if pattern.has_literal_schema() {
            let db = pattern.schema().to_string();
            if source.includes_schema(&db) && !wanted.iter().any(|(d, _)| *d == db) {
                let exists = databases.contains(&db);
                wanted.push((db, exists));
            }
        } else {
            let matching: Vec<&String> = databases
                .iter()
                .filter(|db| pattern.matches_schema(db) && source.includes_schema(db))
                .collect();
            if matching.is_empty() {
                unmatched_globs.push(pattern.to_string());
            }
            for db in matching {
                if !wanted.iter().any(|(d, _)| d == db) {
                    wanted.push((db.clone(), true));
                }
            }
        }
    }
    let mut items = Vec::new();
    for (db, exists) in wanted {
        let name = format!("privilege SELECT on {db}");
        let quoted = format!("`{}`", db.replace('`', "``"));
        let table_level = tables_covered(&db, source, grants);
        items.push(if db_covered(&db) || table_level {
            if exists {
                CheckItem::new(
                    name,
                    CheckStatus::Pass,
                    "granted (needed to copy tables and verify them)",
                )
            } else {
                CheckItem::new(
                    name,
                    CheckStatus::Warn,
                    format!("SELECT is granted but database {quoted} does not exist (yet)"),
                )
            }
        } else {
            CheckItem::new(
                name,
                CheckStatus::Fail,
                format!("{to} lacks SELECT on {quoted}.* (needed to copy tables and verify them)"),
            )
            .with_fix(format!("GRANT SELECT ON {quoted}.* TO {to};"))
        });
    }
    for pattern in unmatched_globs {
        items.push(
            CheckItem::new(
                "privilege SELECT",
                CheckStatus::Warn,
                format!("no database visible to {to} matches include pattern `{pattern}`; the user may lack privileges to see them"),
            )
            .with_fix(format!("GRANT SELECT ON *.* TO {to}; (or GRANT SELECT ON `db`.* for each database to replicate)")),
        );
    }
    items
}

/// True when every include pattern for `db` names one table and each has a table-level SELECT.
fn tables_covered(db: &str, source: &SourceConfig, grants: &[Grant]) -> bool {
    let mut patterns = source
        .include
        .iter()
        .filter(|p| p.matches_schema(db))
        .peekable();
    patterns.peek().is_some()
        && patterns.all(|p| {
            p.has_literal_schema()
                && !p.table().contains(['*', '?'])
                && grants.iter().any(|g| {
                    g.has(&["SELECT"])
                        && matches!(&g.scope, GrantScope::Table(d, t) if d == db && t == p.table())
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grant_lines() {
        let g = Grant::parse("GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `u4`@`%` IDENTIFIED BY PASSWORD '*DBD7'").unwrap();
        assert_eq!(g.scope, GrantScope::Global);
        assert_eq!(
            g.privileges,
            ["SELECT", "REPLICATION SLAVE", "BINLOG MONITOR"]
        );
        let g = Grant::parse("GRANT SELECT ON `shop\\_db`.* TO `u`@`%`").unwrap();
        assert_eq!(g.scope, GrantScope::Database("shop\\_db".into()));
        let g = Grant::parse("GRANT SELECT (`a`, `b`), INSERT ON `shop`.`t` TO 'u'@'%'").unwrap();
        assert_eq!(g.scope, GrantScope::Table("shop".into(), "t".into()));
        assert_eq!(g.privileges, ["INSERT"]);
        let g = Grant::parse("GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION")
            .unwrap();
        assert!(g.has(&["REPLICATION SLAVE"]));
        assert_eq!(Grant::parse("GRANT `role1` TO `u`@`%`"), None);
        assert_eq!(
            Grant::parse("GRANT PROXY ON ''@'%' TO 'root'@'localhost'")
                .unwrap()
                .scope,
            GrantScope::Other
        );
        let g = Grant::parse("GRANT EXECUTE ON PROCEDURE `db`.`p` TO `u`@`%`").unwrap();
        assert_eq!(g.scope, GrantScope::Other);
    }

    #[test]
    fn like_patterns() {
        assert!(like_match("shop", "shop"));
        assert!(like_match("shop\\_%", "shop_eu"));
        assert!(!like_match("shop\\_%", "shopXeu"));
        assert!(like_match("shop_db", "shopXdb"));
        assert!(like_match("%", "anything"));
        assert!(!like_match("shop", "shop2"));
    }

    #[test]
    fn accounts() {
        let a = Account::parse("o'brien@10.0.%").unwrap();
        assert_eq!(a.sql(), "'o''brien'@'10.0.%'");
        assert_eq!(Account::parse("a@b@%").unwrap().user, "a@b");
    }

    fn source(server_id: Option<u32>) -> SourceConfig {
        let server_id = server_id.map_or(String::new(), |id| format!("server_id = {id}\n"));
        let text = format!(
            "[group]\nname = \"g\"\n[warehouse]\nkind = \"postgres\"\nurl = \"postgres://x@h/db\"\n\
             [[sources]]\nid = \"s\"\nkind = \"mysql\"\nurl = \"mysql://repl:pw@h:3306\"\n\
             tenant = \"t\"\nregion = \"r\"\nfunction = \"f\"\ninclude = [\"shop.*\", \"app_*.*\"]\n\
             snapshot = \"never\"\n{server_id}"
        );
        let config = crate::config::Config::from_str_with_env(
            &text,
            std::path::Path::new("t.toml"),
            &|_| None,
        )
        .unwrap();
        config.sources.into_iter().next().unwrap()
    }

    fn mysql(source: &SourceConfig) -> &MysqlSettings {
        source.mysql().expect("a MySQL source")
    }

    fn facts(flavor: Flavor, version: (u16, u16, u16), vars: &[(&str, &str)]) -> ServerFacts {
        ServerFacts {
            flavor,
            version,
            variables: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn find<'a>(items: &'a [CheckItem], name: &str) -> &'a CheckItem {
        items
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("no {name} in {items:#?}"))
    }

    #[test]
    fn mysql8_settings_get_set_persist_fixes() {
        let server = facts(
            Flavor::MySql,
            (8, 0, 36),
            &[
                ("log_bin", "ON"),
                ("binlog_format", "MIXED"),
                ("binlog_row_image", "MINIMAL"),
                ("binlog_row_metadata", "FULL"),
                ("binlog_row_value_options", "PARTIAL_JSON"),
                ("binlog_checksum", "NONE"),
                ("gtid_mode", "OFF"),
                ("binlog_expire_logs_seconds", "3600"),
                ("expire_logs_days", "0"),
                ("server_id", "1"),
            ],
        );
        let items = evaluate_settings(&server, mysql(&source(None)), &CheckOptions::default());
        assert_eq!(find(&items, "binlog_format").status, CheckStatus::Fail);
        assert_eq!(
            find(&items, "binlog_format").fix.as_deref(),
            Some("SET PERSIST binlog_format = 'ROW';")
        );
        assert_eq!(
            find(&items, "binlog_row_image").fix.as_deref(),
            Some("SET PERSIST binlog_row_image = 'FULL';")
        );
        let value_options = find(&items, "binlog_row_value_options");
        assert_eq!(value_options.status, CheckStatus::Info);
        assert_eq!(value_options.fix, None);
        assert_eq!(find(&items, "binlog_checksum").status, CheckStatus::Pass);
        assert!(find(&items, "binlog_checksum").detail.starts_with("NONE"));
        let retention = find(&items, "binlog_retention");
        assert_eq!(retention.status, CheckStatus::Warn);
        assert!(retention.detail.contains("1h"), "{retention:?}");
        assert_eq!(
            retention.fix.as_deref(),
            Some("SET PERSIST binlog_expire_logs_seconds = 259200;")
        );
        assert!(find(&items, "gtid").detail.contains("gtid_mode = OFF"));
        assert_eq!(find(&items, "server_id").status, CheckStatus::Pass);
        assert!(!items.iter().any(|i| i.name == "log_bin_compress"));
    }

    #[test]
    fn old_mariadb_needs_an_upgrade_and_rds_retention_warns() {
        let server = facts(
            Flavor::MariaDb,
            (10, 4, 30),
            &[
                ("log_bin", "OFF"),
                ("binlog_format", "ROW"),
                ("binlog_row_image", "FULL"),
                ("binlog_checksum", "CRC32"),
                ("expire_logs_days", "7.000000"),
                ("server_id", "77"),
            ],
        );
        let items = evaluate_settings(&server, mysql(&source(Some(77))), &CheckOptions::default());
        let metadata = find(&items, "binlog_row_metadata");
        assert_eq!(metadata.status, CheckStatus::Fail);
        assert!(metadata.fix.as_deref().unwrap().contains("MariaDB 10.5"));
        assert_eq!(find(&items, "log_bin").status, CheckStatus::Fail);
        assert!(find(&items, "binlog_retention").detail.contains("7 days"));
        assert_eq!(find(&items, "binlog_retention").status, CheckStatus::Pass);
        assert_eq!(find(&items, "server_id").status, CheckStatus::Fail);

        let rds = facts(
            Flavor::MySql,
            (8, 0, 35),
            &[
                ("basedir", "/rdsdbbin/mysql-8.0.35/"),
                ("binlog_expire_logs_seconds", "0"),
            ],
        );
        let items = evaluate_settings(&rds, mysql(&source(None)), &CheckOptions::default());
        let retention = find(&items, "binlog_retention");
        assert_eq!(retention.status, CheckStatus::Warn);
        assert_eq!(
            retention.fix.as_deref(),
            Some("CALL mysql.rds_set_configuration('binlog retention hours', 72);")
        );
    }

    #[test]
    fn grants_on_mysql_and_mariadb() {
        let account = Account::parse("repl@10.%").unwrap();
        let source = source(None);
        let dbs = [
            "shop".to_string(),
            "app_eu".to_string(),
            "other".to_string(),
        ];
        let grants: Vec<Grant> = [
            "GRANT REPLICATION SLAVE, SUPER ON *.* TO `repl`@`10.%`",
            "GRANT SELECT ON `app\\_%`.* TO `repl`@`10.%`",
        ]
        .iter()
        .filter_map(|l| Grant::parse(l))
        .collect();
        let mysql = facts(Flavor::MySql, (8, 0, 36), &[]);
        let items = evaluate_grants(&mysql, &account, &grants, &source, &dbs);
        assert_eq!(
            find(&items, "privilege REPLICATION SLAVE").status,
            CheckStatus::Pass
        );
        assert_eq!(
            find(&items, "privilege REPLICATION CLIENT").status,
            CheckStatus::Pass
        );
        assert_eq!(
            find(&items, "privilege SELECT on app_eu").status,
            CheckStatus::Pass
        );
        let shop = find(&items, "privilege SELECT on shop");
        assert_eq!(shop.status, CheckStatus::Fail);
        assert_eq!(
            shop.fix.as_deref(),
            Some("GRANT SELECT ON `shop`.* TO 'repl'@'10.%';")
        );
        assert!(!items.iter().any(|i| i.name.ends_with("other")));

        let mariadb = facts(Flavor::MariaDb, (10, 11, 6), &[]);
        let only_slave: Vec<Grant> =
            Grant::parse("GRANT REPLICATION SLAVE ON *.* TO `repl`@`10.%`")
                .into_iter()
                .collect();
        let items = evaluate_grants(&mariadb, &account, &only_slave, &source, &dbs);
        let monitor = find(&items, "privilege BINLOG MONITOR");
        assert_eq!(monitor.status, CheckStatus::Fail);
        assert_eq!(
            monitor.fix.as_deref(),
            Some("GRANT BINLOG MONITOR ON *.* TO 'repl'@'10.%';")
        );
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(72 * 3600)), "3 days");
        assert_eq!(human(Duration::from_secs(3600)), "1h");
        assert_eq!(human(Duration::from_secs(86_400)), "24h");
        assert_eq!(human(Duration::from_secs(90)), "90s");
    }
}
