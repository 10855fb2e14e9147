//! The settings of a Postgres warehouse (`[warehouse] kind = "postgres"`): where it is.
//!
//! Invariant: the URL is a `postgres://` or `postgresql://` URL (config loading checks it and
//! reports a bad one with the file, line and key); its password never prints.

use crate::config::SecretUrl;

/// `[warehouse]` with `kind = "postgres"`: local Postgres, RDS or Aurora.
#[derive(Debug, Clone)]
pub struct PostgresWarehouseConfig {
    /// Connection URL (`postgres://user:password@host:5432/db`); its password never prints.
    pub url: SecretUrl,
    /// Keep deleted rows, flagged `_tidemark_deleted`, instead of removing them (`soft_delete`).
    pub soft_delete: bool,
    /// Most connections the group opens to the warehouse, all sources together
    /// (`max_connections`, default 16): sources take one only while they load.
    pub max_connections: usize,
}

impl PostgresWarehouseConfig {
    /// The config keys this kind accepts besides `kind`.
    pub const KEYS: &'static [&'static str] = &["url", "soft_delete", "max_connections"];
}
