//! The Data API's wire protocol (AWS JSON 1.1: `POST /`, the operation in `X-Amz-Target`,
//! JSON bodies; signatures are not checked) and its operations over the statement registry.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State as AxumState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::server::{Inner, Record, State, Status, Sub, epoch_seconds};

/// Most statements in one BatchExecuteStatement.
const MAX_BATCH_STATEMENTS: usize = 40;
/// Longest SQL statement the Data API accepts, in bytes.
const MAX_SQL_BYTES: usize = 100 * 1024;
/// Most statements ListStatements returns.
const MAX_LIST_RESULTS: usize = 100;

/// The HTTP routes of the server.
pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/", post(handle))
        // A full batch is 40 statements of 100 KB; axum's default limit is 2 MB.
        .layer(DefaultBodyLimit::max(8 << 20))
        .with_state(state)
}

/// An error response: HTTP 400 with the exception's `__type` and `message`.
struct ApiError {
    kind: &'static str,
    message: String,
    resource_id: Option<String>,
}

impl ApiError {
    fn validation(message: impl Into<String>) -> Self {
        ApiError {
            kind: "ValidationException",
            message: message.into(),
            resource_id: None,
        }
    }

    fn not_found(id: &str) -> Self {
        ApiError {
            kind: "ResourceNotFoundException",
            message: format!("Query {id} does not exist"),
            resource_id: Some(id.to_string()),
        }
    }
}

/// Dispatches one request on its `X-Amz-Target` operation.
async fn handle(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let operation = target.strip_prefix("RedshiftData.").unwrap_or(target);
    let result = match operation {
        "ExecuteStatement" => parse(&body).and_then(|r| execute_statement(&state, r)),
        "BatchExecuteStatement" => parse(&body).and_then(|r| batch_execute_statement(&state, r)),
        "DescribeStatement" => parse(&body).and_then(|r| describe_statement(&state, r)),
        "GetStatementResult" => parse(&body).and_then(|r| get_statement_result(&state, r)),
        "ListStatements" => parse(&body).and_then(|r| list_statements(&state, r)),
        "CancelStatement" => parse(&body).and_then(|r| cancel_statement(&state, r)),
        _ => Err(ApiError {
            kind: "UnknownOperationException",
            message: format!("the Redshift test server has no operation {target:?}"),
            resource_id: None,
        }),
    };
    let (status, body) = match result {
        Ok(body) => (StatusCode::OK, body),
        Err(e) => {
            let mut body = json!({"__type": e.kind, "message": e.message});
            if let Some(id) = e.resource_id {
                body["ResourceId"] = Value::String(id);
            }
            (StatusCode::BAD_REQUEST, body)
        }
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
        body.to_string(),
    )
        .into_response()
}

/// The request body as `T`, or a ValidationException naming what is wrong.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::validation(format!("bad request: {e}")))
}

/// Where a statement runs, common to both execute operations.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Target {
    database: Option<String>,
    cluster_identifier: Option<String>,
    workgroup_name: Option<String>,
    secret_arn: Option<String>,
    db_user: Option<String>,
    statement_name: Option<String>,
    session_id: Option<String>,
    session_keep_alive_seconds: Option<i64>,
    parameters: Option<Vec<Value>>,
}

impl Target {
    /// The database to run in, once the request is one this server implements.
    fn database(&self) -> Result<String, ApiError> {
        if self.session_id.is_some() || self.session_keep_alive_seconds.is_some() {
            return Err(ApiError::validation(
                "the Redshift test server does not implement sessions (SessionId, SessionKeepAliveSeconds)",
            ));
        }
        if self.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
            return Err(ApiError::validation(
                "the Redshift test server does not implement Parameters",
            ));
        }
        if self.cluster_identifier.is_some() == self.workgroup_name.is_some() {
            return Err(ApiError::validation(
                "exactly one of ClusterIdentifier and WorkgroupName is required",
            ));
        }
        match self.database.as_deref() {
            Some(db) if !db.is_empty() => Ok(db.to_string()),
            _ => Err(ApiError::validation("Database is required")),
        }
    }

    /// The response of an execute operation for statement `id` created at `created`.
    fn response(&self, id: &str, created: SystemTime) -> Value {
        compact(json!({
            "Id": id,
            "CreatedAt": epoch_seconds(created),
            "Database": self.database,
            "ClusterIdentifier": self.cluster_identifier,
            "WorkgroupName": self.workgroup_name,
            "SecretArn": self.secret_arn,
            "DbUser": self.db_user,
        }))
    }
}

/// The body of ExecuteStatement.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ExecuteRequest {
    sql: String,
    #[serde(flatten)]
    target: Target,
}

/// The body of BatchExecuteStatement.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BatchRequest {
    sqls: Vec<String>,
    #[serde(flatten)]
    target: Target,
}

/// The body of DescribeStatement, GetStatementResult and CancelStatement.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IdRequest {
    id: String,
    next_token: Option<String>,
}

/// The body of ListStatements.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListRequest {
    statement_name: Option<String>,
    status: Option<String>,
    max_results: Option<usize>,
    next_token: Option<String>,
}

/// Rejects a statement longer than the Data API takes.
fn check_sql_size(sql: &str) -> Result<(), ApiError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(ApiError::validation(format!(
            "a SQL statement is at most {MAX_SQL_BYTES} bytes, this one is {}",
            sql.len()
        )));
    }
    Ok(())
}

/// ExecuteStatement: one statement, run on its own in autocommit.
fn execute_statement(state: &Arc<State>, request: ExecuteRequest) -> Result<Value, ApiError> {
    let database = request.target.database()?;
    check_sql_size(&request.sql)?;
    if request.sql.trim().is_empty() {
        return Err(ApiError::validation("Sql is empty"));
    }
    let name = request.target.statement_name.clone();
    let (id, created) = state.submit(database, name, vec![request.sql], false);
    Ok(request.target.response(&id, created))
}

/// BatchExecuteStatement: up to 40 statements in one transaction.
fn batch_execute_statement(state: &Arc<State>, request: BatchRequest) -> Result<Value, ApiError> {
    let database = request.target.database()?;
    if request.sqls.is_empty() || request.sqls.len() > MAX_BATCH_STATEMENTS {
        return Err(ApiError::validation(format!(
            "Sqls holds 1 to {MAX_BATCH_STATEMENTS} statements, not {}",
            request.sqls.len()
        )));
    }
    for sql in &request.sqls {
        check_sql_size(sql)?;
    }
    let name = request.target.statement_name.clone();
    let (id, created) = state.submit(database, name, request.sqls, true);
    Ok(request.target.response(&id, created))
}

/// Splits `<id>:<n>` into the record id and the index of its n-th statement.
fn split_id(id: &str) -> (&str, Option<usize>) {
    match id.rsplit_once(':') {
        Some((parent, n)) => match n.parse::<usize>() {
            Ok(n) if n >= 1 => (parent, Some(n - 1)),
            _ => (id, None),
        },
        None => (id, None),
    }
}

/// Runs `read` on the record of `id` and, for a sub-statement id, that statement.
fn with_record<T>(
    state: &State,
    id: &str,
    read: impl FnOnce(&mut Record, Option<usize>) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let (parent, sub) = split_id(id);
    let mut inner = state.lock();
    let record = inner
        .records
        .get_mut(parent)
        .ok_or_else(|| ApiError::not_found(id))?;
    if sub.is_some_and(|i| i >= record.subs.len()) {
        return Err(ApiError::not_found(id));
    }
    read(record, sub)
}

/// DescribeStatement: a statement's status, error and row count; a batch lists its
/// statements in SubStatements.
fn describe_statement(state: &State, request: IdRequest) -> Result<Value, ApiError> {
    with_record(state, &request.id, |record, sub| {
        let mut body = match sub {
            Some(i) => sub_json(record, i),
            None if record.is_batch => {
                let subs: Vec<Value> = (0..record.subs.len())
                    .map(|i| sub_json(record, i))
                    .collect();
                compact(json!({
                    "Id": record.id,
                    "Status": record.status.as_str(),
                    "Error": record.error,
                    "QueryString": record.subs.iter().map(|s| s.sql.as_str()).collect::<Vec<_>>().join("; "),
                    "HasResultSet": record.subs.iter().any(|s| s.result.is_some()),
                    "ResultRows": record.subs.iter().map(|s| s.rows).sum::<i64>(),
                    "CreatedAt": epoch_seconds(record.created),
                    "UpdatedAt": epoch_seconds(record.updated),
                    "Duration": Record::duration_ns(record.started, record.updated),
                    "SubStatements": subs,
                }))
            }
            None => {
                let mut body = sub_json(record, 0);
                body["Id"] = Value::String(record.id.clone());
                body["Status"] = Value::String(record.status.as_str().to_string());
                body
            }
        };
        body["Database"] = Value::String(record.database.clone());
        if let Some(name) = &record.name {
            body["StatementName"] = Value::String(name.clone());
        }
        Ok(body)
    })
}

/// The description of statement `i` of `record` (SubStatementData's shape).
fn sub_json(record: &Record, i: usize) -> Value {
    let sub: &Sub = &record.subs[i];
    compact(json!({
        "Id": format!("{}:{}", record.id, i + 1),
        "Status": sub.status.as_str(),
        "Error": sub.error,
        "QueryString": sub.sql,
        "HasResultSet": sub.result.is_some(),
        "ResultRows": sub.rows,
        "CreatedAt": epoch_seconds(record.created),
        "UpdatedAt": epoch_seconds(sub.updated),
        "Duration": Record::duration_ns(sub.started, sub.updated),
    }))
}

/// GetStatementResult: every row of a finished statement at once (no paging).
fn get_statement_result(state: &State, request: IdRequest) -> Result<Value, ApiError> {
    if request.next_token.is_some() {
        return Err(ApiError::validation(
            "the Redshift test server returns every row at once: no NextToken",
        ));
    }
    with_record(state, &request.id, |record, sub| {
        let sub = match sub {
            Some(i) => &record.subs[i],
            None if !record.is_batch => &record.subs[0],
            None => {
                return Err(ApiError::validation(
                    "a batch has no result; ask for a sub-statement id <id>:<n>",
                ));
            }
        };
        match (&sub.result, sub.status) {
            (Some(result), Status::Finished) => Ok(json!({
                "Records": result.records,
                "ColumnMetadata": result.columns,
                "TotalNumRows": result.records.len(),
            })),
            _ => Err(ApiError::validation(
                "Query does not have result. Please check query status with DescribeStatement.",
            )),
        }
    })
}

/// ListStatements: the newest statements first, filtered by name prefix and status.
fn list_statements(state: &State, request: ListRequest) -> Result<Value, ApiError> {
    if request.next_token.is_some() {
        return Err(ApiError::validation(
            "the Redshift test server lists at most 100 statements: no NextToken",
        ));
    }
    let wanted = request.status.as_deref().unwrap_or("ALL");
    let valid = [
        "ALL",
        "SUBMITTED",
        "PICKED",
        "STARTED",
        "FINISHED",
        "FAILED",
        "ABORTED",
    ];
    if !valid.contains(&wanted) {
        return Err(ApiError::validation(format!("unknown Status {wanted:?}")));
    }
    let max = request
        .max_results
        .unwrap_or(MAX_LIST_RESULTS)
        .clamp(1, MAX_LIST_RESULTS);
    let inner = state.lock();
    let mut records: Vec<&Record> = inner
        .records
        .values()
        .filter(|r| wanted == "ALL" || r.status.as_str() == wanted)
        .filter(|r| match &request.statement_name {
            Some(prefix) => r
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(prefix.as_str())),
            None => true,
        })
        .collect();
    records.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.id.cmp(&a.id)));
    let statements: Vec<Value> = records
        .into_iter()
        .take(max)
        .map(|r| {
            let mut item = compact(json!({
                "Id": r.id,
                "Status": r.status.as_str(),
                "StatementName": r.name,
                "CreatedAt": epoch_seconds(r.created),
                "UpdatedAt": epoch_seconds(r.updated),
                "IsBatchStatement": r.is_batch,
            }));
            if r.is_batch {
                item["QueryStrings"] = json!(r.subs.iter().map(|s| &s.sql).collect::<Vec<_>>());
            } else {
                item["QueryString"] = json!(r.subs[0].sql);
            }
            item
        })
        .collect();
    Ok(json!({ "Statements": statements }))
}

/// CancelStatement: ends a statement that has not ended as ABORTED, cancelling its
/// Postgres query and stopping its task (the connection goes, so nothing commits).
fn cancel_statement(state: &State, request: IdRequest) -> Result<Value, ApiError> {
    let (cancel, task) = {
        let mut inner = state.lock();
        let Inner { records, log, .. } = &mut *inner;
        let record = records
            .get_mut(split_id(&request.id).0)
            .ok_or_else(|| ApiError::not_found(&request.id))?;
        if record.status.is_terminal() {
            return Err(ApiError::validation(format!(
                "Could not cancel a query that is already in {} state",
                record.status.as_str()
            )));
        }
        let handles = (record.cancel.take(), record.task.take());
        record.end(Status::Aborted, None, log);
        handles
    };
    if let Some(task) = task {
        task.abort();
    }
    if let Some(cancel) = cancel {
        tokio::spawn(async move {
            // Best effort: the query may have ended meanwhile.
            let _ = cancel.cancel_query(tokio_postgres::NoTls).await;
        });
    }
    Ok(json!({"Status": true}))
}

/// `value` without its null members: the client reads absent members, not nulls.
fn compact(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .collect::<Map<String, Value>>(),
        ),
        other => other,
    }
}
