//! Snapshots: copying a source's existing rows, chunk by chunk, into the warehouse while its
//! change log keeps streaming (docs/snapshots.md).
//!
//! One algorithm serves the first start, a table added later, a re-copy on demand and the
//! recovery after a lost log position:
//! 1. streaming resumes from the committed position (on a first start or after a lost position:
//!    the current end of the log, recorded before anything is copied: the low watermark);
//! 2. each table is split into key ranges ([`crate::source::copy`]); up to
//!    `snapshot_parallelism` ranges are read at once and loaded at once, each in one warehouse
//!    transaction together with the record that marks it done ([`state`]: a table's plan in the
//!    progress record, each chunk's completion in a record of its own), so a restart resumes
//!    at the first chunk not done and never copies a done one again;
//! 3. a chunk's rows load after every change received from the log before its read began and
//!    before every change received after: whatever the chunk missed, the log brings later, and
//!    the target converges to the source (full row images applied by key);
//! 4. a table's last chunk, loaded once the others are in, deletes the target's rows that neither the copy nor the stream wrote
//!    since the table's copy started: rows deleted at the source while their changes were not
//!    read (a lost log, a table that was not included); a target empty when the table's copy
//!    started has none.

pub mod copier;
pub mod request;
pub mod state;

pub use copier::{CopiedChunk, Copier, SnapshotError};
pub use request::{RequestError, request_snapshot};
pub use state::{ChunkId, Reason, SetAside, SnapshotState, Totals};
