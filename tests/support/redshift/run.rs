//! Running a statement or batch: a Postgres connection of its own (closed when done, so temp
//! tables die with it like in a Data API call), the Redshift checks, the SQL or the COPY
//! emulation, and the record's statuses as it goes.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Value, json};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{Kind, Type};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use super::checks::{self, Plan};
use super::server::{Inner, Outcome, Record, ResultSet, State, Status};

/// Makes a database look like Redshift to the sink's SQL: the SUPER and VARBYTE types and
/// JSON_PARSE. Idempotent and safe when several connections race (the advisory lock is
/// per database); CREATE DOMAIN has no IF NOT EXISTS, hence the catalog checks.
const DATABASE_SETUP: &str = "
BEGIN;
SELECT pg_advisory_xact_lock(7243106535);
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'super' AND typnamespace = 'public'::regnamespace) THEN
    CREATE DOMAIN public.super AS jsonb;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'varbyte' AND typnamespace = 'public'::regnamespace) THEN
    CREATE DOMAIN public.varbyte AS bytea;
  END IF;
END $$;
CREATE OR REPLACE FUNCTION public.json_parse(text) RETURNS public.super
  LANGUAGE sql IMMUTABLE AS $$ SELECT $1::jsonb::public.super $$;
COMMIT;
";

/// What a statement that ran to the end leaves.
struct Done {
    rows: i64,
    result: Option<ResultSet>,
}

/// Why a statement failed: its `Error` text.
enum Failure {
    /// The Redshift checks refused it.
    Rejected(String),
    /// Postgres or the COPY emulation failed it.
    Failed(String),
}

impl Failure {
    fn message(&self) -> &str {
        match self {
            Failure::Rejected(m) | Failure::Failed(m) => m,
        }
    }

    fn outcome(&self) -> Outcome {
        match self {
            Failure::Rejected(m) => Outcome::Rejected(m.clone()),
            Failure::Failed(m) => Outcome::Failed(m.clone()),
        }
    }
}

/// Runs the statement or batch `id` to its end, updating its record; stops updating it once
/// something else (a cancel) ended it.
pub async fn run(state: Arc<State>, id: String) {
    let Some((database, sqls, is_batch)) = with_live(&state, &id, |record, _| {
        record.status = Status::Picked;
        record.updated = SystemTime::now();
        let sqls: Vec<String> = record.subs.iter().map(|s| s.sql.clone()).collect();
        (record.database.clone(), sqls, record.is_batch)
    }) else {
        return;
    };
    let delay = state.settings.statement_delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let client = match connect(&state, &database).await {
        Ok(client) => client,
        Err(error) => {
            fail(&state, &id, Some(0), &Failure::Failed(error));
            return;
        }
    };
    let started = with_live(&state, &id, |record, _| {
        let now = SystemTime::now();
        record.cancel = Some(client.cancel_token());
        record.status = Status::Started;
        record.started = Some(now);
        record.updated = now;
    });
    if started.is_none() {
        return;
    }
    match execute(&state, &id, &client, &sqls, is_batch).await {
        Ok(()) => {
            with_live(&state, &id, |record, log| {
                record.end(Status::Finished, None, log);
            });
        }
        Err((index, failure)) => fail(&state, &id, index, &failure),
    }
}

/// Runs every statement of `sqls` in order, a batch inside one transaction; on failure
/// returns the index of the failed statement (None: the COMMIT) and why.
async fn execute(
    state: &State,
    id: &str,
    client: &Client,
    sqls: &[String],
    is_batch: bool,
) -> Result<(), (Option<usize>, Failure)> {
    if is_batch {
        client
            .batch_execute("BEGIN")
            .await
            .map_err(|e| (Some(0), Failure::Failed(pg_error(&e))))?;
    }
    for (i, sql) in sqls.iter().enumerate() {
        with_live(state, id, |record, _| {
            let now = SystemTime::now();
            record.subs[i].status = Status::Started;
            record.subs[i].started = Some(now);
            record.subs[i].updated = now;
        });
        let done = run_one(state, client, sql, is_batch)
            .await
            .map_err(|failure| (Some(i), failure))?;
        with_live(state, id, |record, log| {
            let sub = &mut record.subs[i];
            sub.status = Status::Finished;
            sub.updated = SystemTime::now();
            sub.rows = done.rows;
            sub.result = done.result;
            log.push((sub.sql.clone(), Outcome::Finished { rows: done.rows }));
        });
    }
    if is_batch {
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| (None, Failure::Failed(pg_error(&e))))?;
    }
    Ok(())
}

/// Checks one statement and runs it.
async fn run_one(
    state: &State,
    client: &Client,
    sql: &str,
    in_batch: bool,
) -> Result<Done, Failure> {
    let plan = checks::plan(sql, in_batch).map_err(|m| Failure::Rejected(format!("ERROR: {m}")))?;
    match plan {
        Plan::Sql(text) => run_sql(client, &text)
            .await
            .map_err(|e| Failure::Failed(pg_error(&e))),
        Plan::Copy(copy) => {
            let rows = super::copy::run(client, &state.s3, &copy)
                .await
                .map_err(Failure::Failed)?;
            Ok(Done {
                rows: i64::try_from(rows).unwrap_or(i64::MAX),
                result: None,
            })
        }
    }
}

/// Runs `sql` and keeps its rows. Prepared first only to learn the result's column types
/// (the simple protocol reports names only); run with the simple protocol so every value
/// arrives in Postgres' text form, which is what the Data API returns for most types.
async fn run_sql(client: &Client, sql: &str) -> Result<Done, tokio_postgres::Error> {
    let statement = client.prepare(sql).await?;
    let columns = statement.columns();
    let mut records = Vec::new();
    let mut affected = 0;
    for message in client.simple_query(sql).await? {
        match message {
            SimpleQueryMessage::Row(row) => records.push(
                (0..row.len())
                    .map(|i| field(row.get(i), columns.get(i).map(|c| c.type_())))
                    .collect(),
            ),
            SimpleQueryMessage::CommandComplete(n) => affected = n,
            _ => {}
        }
    }
    if columns.is_empty() {
        return Ok(Done {
            rows: i64::try_from(affected).unwrap_or(i64::MAX),
            result: None,
        });
    }
    let metadata = columns
        .iter()
        .map(|c| {
            let type_name = redshift_type_name(c.type_());
            json!({"name": c.name(), "label": c.name(), "typeName": type_name})
        })
        .collect();
    Ok(Done {
        rows: i64::try_from(records.len()).unwrap_or(i64::MAX),
        result: Some(ResultSet {
            columns: metadata,
            records,
        }),
    })
}

/// The Redshift name of a result column's type. Postgres reports a domain's base type in
/// results, and the only jsonb and bytea values here are Redshift's SUPER and VARBYTE (the
/// domains): Redshift has no types of those names.
fn redshift_type_name(type_: &Type) -> &str {
    let base = match type_.kind() {
        Kind::Domain(base) => base,
        _ => type_,
    };
    match base.name() {
        "jsonb" => "super",
        "bytea" => "varbyte",
        name => name,
    }
}

/// A value as a Data API Field: integers as longValue, floats as doubleValue, booleans as
/// booleanValue, NULL as isNull, everything else as its text (varbyte as bare hex).
fn field(value: Option<&str>, type_: Option<&Type>) -> Value {
    let Some(text) = value else {
        return json!({"isNull": true});
    };
    match type_.map_or("", redshift_type_name) {
        "int2" | "int4" | "int8" => {
            if let Ok(n) = text.parse::<i64>() {
                return json!({"longValue": n});
            }
        }
        // JSON has no NaN or infinities: those stay text.
        "float4" | "float8" => {
            if let Some(x) = text.parse::<f64>().ok().filter(|x| x.is_finite()) {
                return json!({"doubleValue": x});
            }
        }
        "bool" => return json!({"booleanValue": text == "t"}),
        "varbyte" => return json!({"stringValue": text.strip_prefix("\\x").unwrap_or(text)}),
        _ => {}
    }
    json!({"stringValue": text})
}

/// A Postgres error as the statement's `Error` text, like Redshift's `ERROR: ...`; a
/// serialization failure or deadlock becomes Redshift's error 1023 so clients retry it.
pub fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db)
            if *db.code() == SqlState::T_R_SERIALIZATION_FAILURE
                || *db.code() == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            format!(
                "ERROR: 1023 DETAIL: Serializable isolation violation on table - {}",
                db.message()
            )
        }
        Some(db) => format!("ERROR: {}", db.message()),
        None => format!("ERROR: {e}"),
    }
}

/// A new connection to `database`, set up like a Redshift session: UTC, backslash escapes
/// in string literals (the sink writes `\\` for a backslash).
async fn connect(state: &State, database: &str) -> Result<Client, String> {
    let mut config = state.postgres.clone();
    config.dbname(database);
    let (client, connection) = config.connect(NoTls).await.map_err(|e| pg_error(&e))?;
    tokio::spawn(async move {
        // The connection ends when the client is dropped; its error has no one to go to.
        let _ = connection.await;
    });
    let ready = state.lock().ready_databases.contains(database);
    if !ready {
        client
            .batch_execute(DATABASE_SETUP)
            .await
            .map_err(|e| pg_error(&e))?;
        state.lock().ready_databases.insert(database.to_string());
    }
    client
        .batch_execute(
            "SET TimeZone = 'UTC'; SET standard_conforming_strings = off; \
             SET escape_string_warning = off;",
        )
        .await
        .map_err(|e| pg_error(&e))?;
    Ok(client)
}

/// Ends `id` as failed by `failure` of its statement `index` (None: the batch's COMMIT).
fn fail(state: &State, id: &str, index: Option<usize>, failure: &Failure) {
    with_live(state, id, |record, log| {
        match index.and_then(|i| record.subs.get_mut(i)) {
            Some(sub) => {
                sub.status = Status::Failed;
                sub.error = Some(failure.message().to_string());
                sub.updated = SystemTime::now();
                log.push((sub.sql.clone(), failure.outcome()));
            }
            None => log.push(("COMMIT".to_string(), failure.outcome())),
        }
        record.end(Status::Failed, Some(failure.message().to_string()), log);
    });
}

/// Applies `update` to the record `id` and the statement log, unless the record has ended.
fn with_live<T>(
    state: &State,
    id: &str,
    update: impl FnOnce(&mut Record, &mut Vec<(String, Outcome)>) -> T,
) -> Option<T> {
    let mut inner = state.lock();
    let Inner { records, log, .. } = &mut *inner;
    let record = records.get_mut(id).filter(|r| !r.status.is_terminal())?;
    Some(update(record, log))
}
