//! MySQL sources in end-to-end tests: a source database with a warehouse and `tidemark run`
//! loading one into the other, and databases on private MariaDB instances.

use std::time::Duration;

use mysql_async::prelude::Queryable;

use super::compare::{Source, TablePair, tables_diff, wait_tables_equal};
use super::config::{GroupConfig, SourceConfig};
use super::poll::wait_checkpoint;
use super::process::Tidemark;
use super::warehouse::{Warehouse, fresh_warehouse};

/// How long a pipeline test waits for the warehouse to catch up with its source.
pub const CONVERGE: Duration = Duration::from_secs(60);

/// A source database on the shared MariaDB, a warehouse, and `tidemark run` loading the one
/// into the other as source `source_id`: what every MySQL pipeline test starts from.
pub struct MysqlSetup {
    // Fields drop in this order: tidemark is killed before its databases are let go.
    /// The tidemark process.
    pub tm: Tidemark,
    /// A connection using the source database.
    pub conn: mysql_async::Conn,
    /// The source database.
    pub db: String,
    /// The warehouse.
    pub wh: Warehouse,
    /// The config tidemark runs with.
    pub group: GroupConfig,
    /// The source's id (its checkpoint row).
    pub source_id: String,
    /// The warehouse schema the source's tables land in.
    pub schema: String,
}

impl MysqlSetup {
    /// A source database and a warehouse named after `hint`, the source tables made by `ddl`,
    /// and tidemark running with its start position checkpointed.
    pub async fn start(hint: &str, source_id: &str, ddl: &[impl AsRef<str>]) -> Self {
        Self::start_with(hint, source_id, ddl, |_| {}).await
    }

    /// As [`Self::start`], the group config adjusted by `configure`.
    pub async fn start_with(
        hint: &str,
        source_id: &str,
        ddl: &[impl AsRef<str>],
        configure: impl FnOnce(&mut GroupConfig),
    ) -> Self {
        let wh = fresh_warehouse(hint).await;
        let mut s = Self::prepare(wh, hint, source_id, ddl, configure).await;
        s.run().await;
        s
    }

    /// As [`Self::start_with`] into the warehouse `wh`, with tidemark not started yet: for
    /// tests that give it extra arguments or a warehouse of their own first. [`Self::run`]
    /// starts it.
    pub async fn prepare(
        wh: Warehouse,
        hint: &str,
        source_id: &str,
        ddl: &[impl AsRef<str>],
        configure: impl FnOnce(&mut GroupConfig),
    ) -> Self {
        let (mut conn, db) = super::fresh_mysql_database(hint).await;
        exec(&mut conn, ddl).await;
        let source = SourceConfig::mysql(source_id, &super::mysql_url(), &db);
        let schema = source.schema();
        let mut group = GroupConfig::new(&wh.url, vec![source]);
        configure(&mut group);
        MysqlSetup {
            tm: Tidemark::prepare(|state| group.render(state)),
            conn,
            db,
            wh,
            group,
            source_id: source_id.to_string(),
            schema,
        }
    }

    /// Starts tidemark and returns the start position it checkpointed; panics if it exits or
    /// records none within 30 s.
    pub async fn run(&mut self) -> String {
        self.tm.spawn();
        wait_checkpoint(
            &mut self.tm,
            &self.wh,
            &self.source_id,
            Duration::from_secs(30),
        )
        .await
    }

    /// Runs `statements` at the source, in order.
    pub async fn exec(&mut self, statements: &[impl AsRef<str>]) {
        exec(&mut self.conn, statements).await;
    }

    /// URL of the source database, for writers with connections of their own.
    pub fn source_url(&self) -> String {
        super::mysql_url_for(&self.db)
    }

    /// Waits up to [`CONVERGE`] until each source table of `tables` equals its target.
    pub async fn converge(&mut self, tables: &[&str]) {
        self.converge_within(tables, CONVERGE).await;
    }

    /// Waits up to `timeout` until each source table of `tables` equals its target.
    pub async fn converge_within(&mut self, tables: &[&str], timeout: Duration) {
        self.compare(tables, &[], timeout).await;
    }

    /// As [`Self::converge`], the source columns `skip` left out of the comparison.
    pub async fn converge_skipping(&mut self, tables: &[&str], skip: &[&str]) {
        self.compare(tables, skip, CONVERGE).await;
    }

    async fn compare(&mut self, tables: &[&str], skip: &[&str], timeout: Duration) {
        let pairs: Vec<TablePair> = TablePair::mysql(&self.db, tables, &self.schema)
            .into_iter()
            .map(|p| p.skipping(skip))
            .collect();
        let mut source = Source::Mysql(&mut self.conn);
        wait_tables_equal(&mut self.tm, &mut source, &self.wh.client, &pairs, timeout).await;
    }

    /// The comparison of `tables` with their targets now: Ok(rows per table) or the diff.
    pub async fn diff(&mut self, tables: &[&str]) -> Result<Vec<usize>, String> {
        let pairs = TablePair::mysql(&self.db, tables, &self.schema);
        tables_diff(&mut Source::Mysql(&mut self.conn), &self.wh.client, &pairs).await
    }
}

/// Runs `statements` on `conn`, in order, panicking with the one that fails.
pub async fn exec(conn: &mut mysql_async::Conn, statements: &[impl AsRef<str>]) {
    for sql in statements {
        let sql = sql.as_ref();
        conn.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// (Re)creates database `db`, empty, on the MariaDB at `url` (a private instance) and returns
/// a connection using it.
pub async fn create_database_on(url: &str, db: &str) -> mysql_async::Conn {
    let mut admin = super::mysql_conn(url).await;
    admin
        .query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
        .await
        .unwrap();
    admin
        .query_drop(format!("CREATE DATABASE `{db}`"))
        .await
        .unwrap();
    admin.disconnect().await.ok();
    super::mysql_conn(&format!("{url}/{db}")).await
}
