//! The warehouse side of end-to-end tests: a fresh Postgres database per test (on the shared
//! server or a private one; those of exited test processes are dropped), connections, and
//! queries that return every value as text.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// A Postgres database of its own for one test, on the shared server or a private instance.
pub struct Warehouse {
    /// URL of the warehouse database (what the tidemark config gets).
    pub url: String,
    /// Its name.
    pub db: String,
    /// A connection to it.
    pub client: Client,
}

/// Connects to Postgres at `url`, or returns the error.
pub async fn try_pg_client(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Connects to Postgres at `url`, panicking with the URL on failure.
pub async fn pg_client(url: &str) -> Client {
    try_pg_client(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// `url` (`postgres://user@host:port/anything`) with `db` as its database.
pub fn with_database(url: &str, db: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let base = match url[authority_start..].find(['/', '?']) {
        Some(i) => &url[..authority_start + i],
        None => url,
    };
    format!("{base}/{db}")
}

/// A new, empty warehouse database on the shared Postgres.
pub async fn fresh_warehouse(hint: &str) -> Warehouse {
    fresh_warehouse_on(&super::pg_url(), hint).await
}

/// A new, empty database named `w<pid>_<n>_<hint>` on the Postgres server at `server_url`.
pub async fn fresh_warehouse_on(server_url: &str, hint: &str) -> Warehouse {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let prefix = format!(
        "w{}_{}_",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let db = super::name_with_hint(&prefix, hint, 63);
    let admin = pg_client(server_url).await;
    drop_warehouses_of_dead_processes(server_url, &admin).await;
    admin
        .batch_execute(&format!("CREATE DATABASE \"{db}\""))
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {db} on {server_url}: {e}"));
    let url = with_database(server_url, &db);
    Warehouse {
        client: pg_client(&url).await,
        url,
        db,
    }
}

/// Once per process and server, drops warehouse databases of test processes that have exited.
async fn drop_warehouses_of_dead_processes(server_url: &str, admin: &Client) {
    static DONE: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    if !DONE
        .lock()
        .unwrap()
        .get_or_insert_with(HashSet::new)
        .insert(server_url.to_string())
    {
        return;
    }
    let Ok(rows) = admin
        .simple_query("SELECT datname FROM pg_database WHERE datname ~ '^w[0-9]+_[0-9]+_'")
        .await
    else {
        return;
    };
    for message in rows {
        let SimpleQueryMessage::Row(row) = message else {
            continue;
        };
        let Some(name) = row.get(0) else { continue };
        let Some(pid) = name[1..]
            .split('_')
            .next()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
        }
    }
}

/// `s` as a SQL string literal.
pub fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Rows of `sql` (simple protocol: every value as text, NULL as None).
pub async fn pg_rows(client: &Client, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    let messages = client
        .simple_query(sql)
        .await
        .map_err(|e| match e.as_db_error() {
            Some(db) => format!("{sql}: {}: {}", db.code().code(), db.message()),
            None => format!("{sql}: {e}"),
        })?;
    Ok(messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

impl Warehouse {
    /// Rows of `sql`, panicking with the statement on error.
    pub async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        pg_rows(&self.client, sql)
            .await
            .unwrap_or_else(|e| panic!("warehouse query failed: {e}"))
    }

    /// The single text value of `sql` (first column of the first row), None for no row / NULL.
    pub async fn value(&self, sql: &str) -> Option<String> {
        self.rows(sql)
            .await
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten())
    }

    /// Reconnects (after the warehouse server restarted).
    pub async fn reconnect(&mut self) {
        self.client = pg_client(&self.url).await;
    }

    /// The `position` of `source_id`'s checkpoint row, if the row exists.
    pub async fn checkpoint(&self, source_id: &str) -> Option<String> {
        self.checkpoint_field(source_id, "coalesce(position, '')")
            .await
    }

    /// The `resume_point` of `source_id`'s checkpoint (jsonb as text), if the row exists.
    pub async fn resume_point(&self, source_id: &str) -> Option<String> {
        self.checkpoint_field(source_id, "resume_point::text").await
    }

    /// `expr` over `source_id`'s checkpoint row; None if there is no row (or no
    /// `tidemark.progress` table yet).
    async fn checkpoint_field(&self, source_id: &str, expr: &str) -> Option<String> {
        let sql = format!(
            "SELECT {expr} FROM tidemark.progress WHERE source_id = {}",
            sql_literal(source_id)
        );
        pg_rows(&self.client, &sql)
            .await
            .ok()
            .and_then(|rows| rows.into_iter().next())
            .and_then(|r| r.into_iter().next().flatten())
    }

    /// True if `schema.table` exists.
    pub async fn table_exists(&self, schema: &str, table: &str) -> bool {
        let sql = format!(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = {} AND table_name = {}",
            sql_literal(schema),
            sql_literal(table)
        );
        !self.rows(&sql).await.is_empty()
    }

    /// `(column, format_type)` of `schema.table`, in column order.
    pub async fn column_types(&self, schema: &str, table: &str) -> Vec<(String, String)> {
        pg_column_types(&self.client, schema, table)
            .await
            .unwrap_or_else(|e| panic!("warehouse query failed: {e}"))
    }

    /// The primary key columns of `schema.table`, in key order.
    pub async fn primary_key(&self, schema: &str, table: &str) -> Vec<String> {
        pg_primary_key(&self.client, schema, table)
            .await
            .unwrap_or_else(|e| panic!("warehouse query failed: {e}"))
    }
}

/// `(column, format_type)` of `schema.table`, in column order.
pub async fn pg_column_types(
    client: &Client,
    schema: &str,
    table: &str,
) -> Result<Vec<(String, String)>, String> {
    let sql = format!(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
         WHERE a.attrelid = '\"{schema}\".\"{table}\"'::regclass AND a.attnum > 0 \
         AND NOT a.attisdropped ORDER BY a.attnum"
    );
    Ok(pg_rows(client, &sql)
        .await?
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect())
}

/// The primary key columns of `schema.table`, in key order (none if it has no key).
pub async fn pg_primary_key(
    client: &Client,
    schema: &str,
    table: &str,
) -> Result<Vec<String>, String> {
    let sql = format!(
        "SELECT a.attname FROM pg_index i \
         JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) ON true \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
         WHERE i.indrelid = '\"{schema}\".\"{table}\"'::regclass AND i.indisprimary \
         ORDER BY k.n"
    );
    Ok(pg_rows(client, &sql)
        .await?
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect())
}

/// The ids of `schema.t` in the warehouse, in order; none before the table exists (for tests of
/// one small table `t (id ...)`).
pub async fn target_ids(wh: &Warehouse, schema: &str) -> Vec<String> {
    pg_rows(
        &wh.client,
        &format!("SELECT id::text FROM {schema}.t ORDER BY id"),
    )
    .await
    .unwrap_or_default()
    .into_iter()
    .filter_map(|row| row.into_iter().next().flatten())
    .collect()
}
