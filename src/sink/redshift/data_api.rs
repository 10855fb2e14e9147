//! The Redshift Data API as the sink uses it: one statement (autocommit) or one transaction of
//! up to 40 statements, each waited for by polling `DescribeStatement`, with Redshift's error
//! text and the statement it belongs to.
//!
//! Every statement carries the name `tidemark:<source>`: a process that starts again finds the
//! statements its predecessor left running (the Data API runs a statement to its end whoever
//! waits for it) and waits for them before it reads the progress, so an old batch can never
//! commit after a newer one.

use std::time::Duration;

use aws_sdk_redshiftdata::Client;
use aws_sdk_redshiftdata::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_redshiftdata::types::{Field, StatementStatusString, StatusString};

use super::config::{RedshiftAuth, RedshiftConfig, RedshiftTarget};
use crate::error::ErrorKind;

/// The most statements one `BatchExecuteStatement` takes.
pub const MAX_STATEMENTS: usize = 40;
/// The longest statement the Data API takes, in bytes.
pub const MAX_STATEMENT_BYTES: usize = 100 * 1024;
/// First wait between two `DescribeStatement` calls; it doubles up to [`MAX_POLL`].
const FIRST_POLL: Duration = Duration::from_millis(25);
/// Longest wait between two `DescribeStatement` calls: a finished statement is noticed at
/// most this late, and a long one costs one call per this much time.
const MAX_POLL: Duration = Duration::from_secs(1);
/// How many characters of a statement an error quotes.
const QUOTED_SQL_CHARS: usize = 300;

/// A failure of the Data API or of a statement it ran.
#[derive(Debug, thiserror::Error)]
pub enum DataApiError {
    /// The request itself failed (network, throttling, credentials, validation).
    #[error("Redshift Data API {operation} failed: {message}")]
    Request {
        /// The API operation.
        operation: &'static str,
        /// What the API or the transport said.
        message: String,
        /// How to handle it.
        kind: ErrorKind,
    },
    /// Redshift ran the statement and it failed; a transaction it was part of rolled back.
    #[error("Redshift refused `{sql}`: {error}")]
    Statement {
        /// The statement, shortened.
        sql: String,
        /// Redshift's error text.
        error: String,
        /// How to handle it.
        kind: ErrorKind,
    },
    /// The statement was cancelled before it finished (nothing of it committed).
    #[error("Redshift statement {id} was aborted before it finished")]
    Aborted {
        /// The statement's id.
        id: String,
    },
    /// The statement is too long for the Data API.
    #[error(
        "a statement of {bytes} bytes is longer than the Data API's {MAX_STATEMENT_BYTES}: `{sql}`"
    )]
    TooLong {
        /// Its length.
        bytes: usize,
        /// The statement, shortened.
        sql: String,
    },
}

impl DataApiError {
    /// Whether waiting can fix it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DataApiError::Request { kind, .. } | DataApiError::Statement { kind, .. } => *kind,
            DataApiError::Aborted { .. } => ErrorKind::Retry,
            DataApiError::TooLong { .. } => ErrorKind::Fatal,
        }
    }
}

/// How to handle Redshift's error text for a statement. Redshift reports no SQLSTATE through
/// the Data API: serializable conflicts (error 1023) and loads that failed (their files are
/// written again on the next attempt) are retried; a missing object or right waits for an
/// operator; anything else too, since stopping a source for an unknown warehouse error helps
/// nobody at 3 a.m.: the error is recorded and the batch offered again.
fn statement_error_kind(error: &str) -> ErrorKind {
    let lower = error.to_ascii_lowercase();
    if lower.contains("1023")
        || lower.contains("serializable isolation violation")
        || lower.contains("load into table")
        || lower.contains("connection")
        || lower.contains("timeout")
    {
        ErrorKind::Retry
    } else {
        ErrorKind::Operator
    }
}

/// The first [`QUOTED_SQL_CHARS`] characters of `sql`, on one line.
pub fn shorten(sql: &str) -> String {
    let one_line: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(QUOTED_SQL_CHARS) {
        Some((end, _)) => format!("{}…", &one_line[..end]),
        None => one_line,
    }
}

/// `request` (ExecuteStatement or BatchExecuteStatement, whose builders share these methods
/// but no trait) addressed to `api`'s cluster or workgroup, with its authentication.
macro_rules! addressed {
    ($api:expr, $request:expr) => {{
        let request = match &$api.target {
            RedshiftTarget::Cluster(id) => $request.cluster_identifier(id),
            RedshiftTarget::Workgroup(name) => $request.workgroup_name(name),
        };
        match &$api.auth {
            RedshiftAuth::SecretArn(arn) => request.secret_arn(arn),
            RedshiftAuth::DbUser(user) => request.db_user(user),
            RedshiftAuth::Iam => request,
        }
    }};
}

/// The rows a query returned, every value as text (`None` for NULL).
pub type Rows = Vec<Vec<Option<String>>>;

/// A Data API client bound to one database, naming its statements after one source.
#[derive(Debug, Clone)]
pub struct DataApi {
    client: Client,
    target: RedshiftTarget,
    auth: RedshiftAuth,
    database: String,
    statement_name: String,
}

impl DataApi {
    /// A client for `config`'s database, from the shared AWS settings, naming its statements
    /// `tidemark:<name>` until [`DataApi::set_name`].
    pub fn new(aws: &aws_config::SdkConfig, config: &RedshiftConfig, name: &str) -> DataApi {
        let mut builder = aws_sdk_redshiftdata::config::Builder::from(aws);
        if let Some(endpoint) = &config.data_api_endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        DataApi {
            client: Client::from_conf(builder.build()),
            target: config.target.clone(),
            auth: config.auth.clone(),
            database: config.database.clone(),
            statement_name: format!("tidemark:{name}"),
        }
    }

    /// Names the statements from now on `name` (one name per source: see the module docs).
    pub fn set_name(&mut self, name: &str) {
        if self.statement_name != name {
            self.statement_name = name.to_owned();
        }
    }

    /// Runs one statement on its own (autocommit) and waits for it.
    pub async fn execute(&self, sql: &str) -> Result<(), DataApiError> {
        let id = self.submit(sql).await?;
        self.wait(&id, &[sql]).await.map(|_| ())
    }

    /// Runs one query and returns its rows.
    pub async fn query(&self, sql: &str) -> Result<Rows, DataApiError> {
        let id = self.submit(sql).await?;
        let has_rows = self.wait(&id, &[sql]).await?;
        if !has_rows {
            return Ok(Vec::new());
        }
        let mut rows = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .get_statement_result()
                .id(&id)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(request_error("GetStatementResult"))?;
            for record in page.records() {
                rows.push(record.iter().map(field_text).collect());
            }
            match page.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_owned()),
                _ => return Ok(rows),
            }
        }
    }

    /// Runs `statements` as one transaction and waits for it: all of them commit, or none.
    pub async fn transaction(&self, statements: &[String]) -> Result<(), DataApiError> {
        for sql in statements {
            check_length(sql)?;
        }
        let request = self
            .client
            .batch_execute_statement()
            .set_sqls(Some(statements.to_vec()))
            .database(&self.database)
            .statement_name(&self.statement_name);
        let output = addressed!(self, request)
            .send()
            .await
            .map_err(request_error("BatchExecuteStatement"))?;
        let id = statement_id(output.id(), "BatchExecuteStatement")?;
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        self.wait(&id, &statements).await.map(|_| ())
    }

    /// Waits until no statement of this client's name is still running: what a process that
    /// stopped mid-batch left behind must end (commit or roll back) before its progress is read.
    pub async fn wait_for_leftovers(&self) -> Result<usize, DataApiError> {
        let mut waited = 0;
        for status in [
            StatusString::Submitted,
            StatusString::Picked,
            StatusString::Started,
        ] {
            let listed = self
                .client
                .list_statements()
                .statement_name(&self.statement_name)
                .status(status)
                .send()
                .await
                .map_err(request_error("ListStatements"))?;
            for statement in listed.statements() {
                // The name filter matches prefixes: `tidemark:a` also lists `tidemark:ab`.
                if statement.statement_name() != Some(self.statement_name.as_str()) {
                    continue;
                }
                let id = statement.id().to_owned();
                // Its outcome does not matter here, only that it ended.
                let _ = self.wait(&id, &[]).await;
                waited += 1;
            }
        }
        Ok(waited)
    }

    async fn submit(&self, sql: &str) -> Result<String, DataApiError> {
        check_length(sql)?;
        let request = self
            .client
            .execute_statement()
            .sql(sql)
            .database(&self.database)
            .statement_name(&self.statement_name);
        let output = addressed!(self, request)
            .send()
            .await
            .map_err(request_error("ExecuteStatement"))?;
        statement_id(output.id(), "ExecuteStatement")
    }

    /// Polls statement `id` until it ends; returns whether it has a result set. `statements`
    /// are its SQL texts (one per sub-statement of a batch), for errors.
    async fn wait(&self, id: &str, statements: &[&str]) -> Result<bool, DataApiError> {
        let mut pause = FIRST_POLL;
        loop {
            let described = self
                .client
                .describe_statement()
                .id(id)
                .send()
                .await
                .map_err(request_error("DescribeStatement"))?;
            match described.status() {
                Some(StatusString::Finished) => {
                    return Ok(described.has_result_set().unwrap_or(false));
                }
                Some(StatusString::Failed) => {
                    // A batch names the sub-statement that failed; the others rolled back.
                    let failed = described
                        .sub_statements()
                        .iter()
                        .enumerate()
                        .find(|(_, s)| s.status() == Some(&StatementStatusString::Failed));
                    let (sql, error) = match failed {
                        Some((index, sub)) => (
                            statements.get(index).map_or_else(
                                || sub.query_string().unwrap_or("").to_owned(),
                                |s| (*s).to_owned(),
                            ),
                            sub.error().or(described.error()).unwrap_or("").to_owned(),
                        ),
                        None => (
                            statements.first().map_or_else(
                                || described.query_string().unwrap_or("").to_owned(),
                                |s| (*s).to_owned(),
                            ),
                            described.error().unwrap_or("").to_owned(),
                        ),
                    };
                    return Err(DataApiError::Statement {
                        kind: statement_error_kind(&error),
                        sql: shorten(&sql),
                        error,
                    });
                }
                Some(StatusString::Aborted) => {
                    return Err(DataApiError::Aborted { id: id.to_owned() });
                }
                _ => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_POLL);
                }
            }
        }
    }
}

/// The id a submitted statement got: without one it cannot be followed, which is an error.
fn statement_id(id: Option<&str>, operation: &'static str) -> Result<String, DataApiError> {
    match id {
        Some(id) if !id.is_empty() => Ok(id.to_owned()),
        _ => Err(DataApiError::Request {
            operation,
            message: "the response has no statement id".to_owned(),
            kind: ErrorKind::Retry,
        }),
    }
}

fn check_length(sql: &str) -> Result<(), DataApiError> {
    if sql.len() > MAX_STATEMENT_BYTES {
        return Err(DataApiError::TooLong {
            bytes: sql.len(),
            sql: shorten(sql),
        });
    }
    Ok(())
}

/// A field of a result row as text.
fn field_text(field: &Field) -> Option<String> {
    match field {
        Field::StringValue(s) => Some(s.clone()),
        Field::LongValue(n) => Some(n.to_string()),
        Field::DoubleValue(x) => Some(x.to_string()),
        Field::BooleanValue(b) => Some(b.to_string()),
        Field::IsNull(true) => None,
        Field::IsNull(false) => Some(String::new()),
        Field::BlobValue(blob) => Some(String::from_utf8_lossy(blob.as_ref()).into_owned()),
        _ => None,
    }
}

/// Maps an SDK error of `operation` to a [`DataApiError::Request`], classified by its code.
fn request_error<E, R>(operation: &'static str) -> impl FnOnce(SdkError<E, R>) -> DataApiError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    move |error| {
        let (kind, message) = match &error {
            SdkError::ServiceError(service) => {
                let inner = service.err();
                let code = inner.code().unwrap_or("");
                let kind = match code {
                    "ThrottlingException"
                    | "ActiveStatementsExceededException"
                    | "ActiveSessionsExceededException"
                    | "InternalServerException" => ErrorKind::Retry,
                    "ValidationException" => ErrorKind::Fatal,
                    _ => ErrorKind::Operator,
                };
                (
                    kind,
                    format!("{code}: {}", inner.message().unwrap_or("no message")),
                )
            }
            // Sending failed or timed out, or the response could not be read.
            _ => (ErrorKind::Retry, describe_chain(&error)),
        };
        DataApiError::Request {
            operation,
            message,
            kind,
        }
    }
}

/// `error` and its causes, joined: the SDK's own message is only "dispatch failure".
pub fn describe_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_and_failed_loads_are_retried_missing_objects_wait() {
        assert_eq!(
            statement_error_kind(
                "ERROR: 1023 DETAIL: Serializable isolation violation on table - 100, transactions forming the cycle are: 1, 2"
            ),
            ErrorKind::Retry
        );
        assert_eq!(
            statement_error_kind(
                "Load into table 'tidemark_stage_0' failed. Check 'sys_load_error_detail' system table for details."
            ),
            ErrorKind::Retry
        );
        assert_eq!(
            statement_error_kind("ERROR: permission denied for schema acme_in_txn"),
            ErrorKind::Operator
        );
    }

    #[test]
    fn quoted_statements_are_one_line_and_short() {
        let long = format!("SELECT\n  {}", "x, ".repeat(500));
        let short = shorten(&long);
        assert!(short.starts_with("SELECT x, x,"));
        assert!(!short.contains('\n'));
        assert!(short.chars().count() <= QUOTED_SQL_CHARS + 1);
    }
}
