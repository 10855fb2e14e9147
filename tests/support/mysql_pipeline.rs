//! MySQL sources in end-to-end tests: a source database with a warehouse and `tidemark run`
//! loading one into the other, and databases on private MariaDB instances.

use std::time::Duration;

use mysql_async::prelude::Queryable;

use super::config::{GroupConfig, SourceConfig};
use super::poll::wait_checkpoint;
use super::tidemark::Tidemark;
use super::warehouse::{Warehouse, fresh_warehouse};

/// A fresh warehouse (named after `hint`) and `tidemark run` loading source `source_id`, the
/// database `db` of the shared MariaDB, into it, the group config adjusted by `configure`.
/// Returns once the start position is checkpointed, with the target schema.
pub async fn start_pipeline(
    hint: &str,
    source_id: &str,
    db: &str,
    configure: impl FnOnce(&mut GroupConfig),
) -> (Warehouse, Tidemark, String) {
    let wh = fresh_warehouse(hint).await;
    let source = SourceConfig::mysql(source_id, &super::mysql_url(), db);
    let schema = source.schema();
    let mut group = GroupConfig::new(&wh.url, vec![source]);
    configure(&mut group);
    let mut tm = Tidemark::start(&group);
    wait_checkpoint(&mut tm, &wh, source_id, Duration::from_secs(30)).await;
    (wh, tm, schema)
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
