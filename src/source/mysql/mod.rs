//! MySQL and MariaDB row-binlog source.
//!
//! Events are framed by `mysql_common` (through `mysql_async::binlog`); rows are decoded by our
//! own [`layout`] code against each table's TABLE_MAP metadata, so every rows event describes
//! itself and no schema-history store is needed. The one thing only a statement can say, that a
//! table was renamed, is read by the small tokenizer in [`ddl`].

pub mod assemble;
pub mod charset;
pub mod check;
pub mod ddl;
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
