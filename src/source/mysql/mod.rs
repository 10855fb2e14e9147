//! MySQL and MariaDB row-binlog source.
//!
//! Events are framed by `mysql_common` (through `mysql_async::binlog`); rows are decoded by our
//! own [`layout`] code against each table's TABLE_MAP metadata, so every rows event describes
//! itself and no DDL parser or schema-history store is needed.

pub mod assemble;
pub mod charset;
pub mod check;
pub mod decode;
pub mod error;
pub mod file;
pub mod gtid;
pub mod inspect;
pub mod jsonb;
pub mod jsondiff;
pub mod layout;
pub mod mariadb;
pub mod stream;
