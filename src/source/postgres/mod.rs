//! PostgreSQL logical-replication source.
//!
//! Changes will be read from a logical replication slot through the `pgoutput` plugin, the one
//! every Postgres ships, so nothing needs installing on the source server. So far this module
//! holds the [`pgoutput`] decoder (bytes of one protocol message in, a typed message out, with no
//! I/O, so it can be tested and fuzzed on its own) and the prerequisite [`check`]; the
//! connection, slot management and the conversion to tidemark's events come next.

pub mod check;
pub mod pgoutput;
pub mod slot;
pub mod stream;
pub mod assemble;
pub mod catalog;
pub mod types;
