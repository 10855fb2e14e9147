//! Converters from other replication tools' settings into tidemark config, for migrations.
//!
//! Each converter is pure (text in, a config fragment and the list of what it could not
//! express out) so the CLI only reads files and prints; nothing it cannot express is dropped
//! without being listed.

pub mod dms;
