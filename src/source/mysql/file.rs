//! Reads binlog files from disk (offline inspection, tests) through the same [`Assembler`] as
//! the network reader.
//!
//! Framing is our own and bounds-checked before any bytes reach the event parsers: a truncated
//! or corrupt file is an error naming the byte offset, never a panic.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mysql_async::binlog::BinlogVersion;
use mysql_async::binlog::events::{Event, FormatDescriptionEvent, TransactionPayloadEvent};

use super::assemble::{Assembler, AssemblerOptions, GtidTracker, TRANSACTION_PAYLOAD};
use super::error::BinlogError;
use crate::event::SourceMessage;

/// Every binlog file starts with these four bytes.
const BINLOG_MAGIC: [u8; 4] = [0xfe, b'b', b'i', b'n'];
/// Size of the common event header.
const HEADER_LEN: usize = 19;
/// Largest event we accept (MySQL's max_allowed_packet ceiling is 1 GiB).
const MAX_EVENT_LEN: usize = 1 << 30;

/// Why a binlog file could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be opened or read.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        error: io::Error,
    },
    /// The bytes are not a well-formed binlog at `offset`.
    #[error("{path}: byte offset {offset}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Offset of the event (or header) that is wrong.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An event is well framed but cannot be replicated or decoded.
    #[error("{path}: {error}")]
    Event {
        /// The file.
        path: PathBuf,
        /// The reader's error, which names the event's offset.
        #[source]
        error: Box<BinlogError>,
    },
    /// The message consumer asked to stop (e.g. its output closed).
    #[error("stopped: {0}")]
    Stopped(io::Error),
}

/// Reads every event of the binlog file at `path`, passing each produced message to `emit`.
///
/// `gtids` seeds GTID tracking; pass `GtidTracker::Unknown` to take it from the file's
/// PREVIOUS_GTIDS / GTID_LIST event.
pub fn read_binlog_file(
    path: &Path,
    options: AssemblerOptions,
    gtids: GtidTracker,
    mut emit: impl FnMut(SourceMessage) -> io::Result<()>,
) -> Result<GtidTracker, FileError> {
    let io_err = |error| FileError::Io {
        path: path.to_owned(),
        error,
    };
    let malformed = |offset: u64, reason: String| FileError::Malformed {
        path: path.to_owned(),
        offset,
        reason,
    };
    let mut input = BufReader::with_capacity(1 << 20, File::open(path).map_err(io_err)?);
    let mut magic = [0u8; 4];
    let got = read_up_to(&mut input, &mut magic).map_err(io_err)?;
    if got < 4 || magic != BINLOG_MAGIC {
        return Err(malformed(
            0,
            "not a binlog file (missing the 0xfe 'bin' magic)".into(),
        ));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let source: Arc<str> = Arc::from("file");
    let mut assembler = Assembler::new(source, options, &name, 4, gtids);
    let mut reader = FrameReader::default();
    let mut offset = 4u64;
    let mut buf = Vec::new();
    let mut out = Vec::new();
    loop {
        buf.resize(HEADER_LEN, 0);
        let got = read_up_to(&mut input, &mut buf).map_err(io_err)?;
        if got == 0 {
            break;
        }
        if got < HEADER_LEN {
            return Err(malformed(
                offset,
                format!("truncated event header ({got} of {HEADER_LEN} bytes)"),
            ));
        }
        let size = u32::from_le_bytes([buf[9], buf[10], buf[11], buf[12]]) as usize;
        if !(HEADER_LEN..=MAX_EVENT_LEN).contains(&size) {
            return Err(malformed(offset, format!("impossible event size {size}")));
        }
        buf.resize(size, 0);
        let got = read_up_to(&mut input, &mut buf[HEADER_LEN..]).map_err(io_err)?;
        if got < size - HEADER_LEN {
            return Err(malformed(
                offset,
                format!(
                    "truncated event: header says {size} bytes, file has {}",
                    HEADER_LEN + got
                ),
            ));
        }
        // mysql_common is not written for hostile input; a panic in it must still become an
        // error that names the offset.
        let step = catch_unwind(AssertUnwindSafe(|| {
            feed_event(&mut reader, &mut assembler, &buf, &mut out)
        }));
        match step {
            Ok(Ok(())) => {}
            Ok(Err(StepError::Parse(reason))) => return Err(malformed(offset, reason)),
            Ok(Err(StepError::Event(error))) => {
                return Err(FileError::Event {
                    path: path.to_owned(),
                    error: Box::new(error),
                });
            }
            Err(_) => {
                return Err(malformed(offset, "event could not be parsed".into()));
            }
        }
        for message in out.drain(..) {
            emit(message).map_err(FileError::Stopped)?;
        }
        offset += size as u64;
    }
    Ok(current_gtids(&assembler))
}

enum StepError {
    Parse(String),
    Event(BinlogError),
}

/// Keeps the format description that tells how to split the next event (checksum or not).
struct FrameReader {
    fde: FormatDescriptionEvent<'static>,
}

impl Default for FrameReader {
    fn default() -> Self {
        Self {
            fde: FormatDescriptionEvent::new(BinlogVersion::Version4),
        }
    }
}

impl FrameReader {
    /// Splits one complete event; remembers a format description for the events after it.
    fn read(&mut self, bytes: &[u8]) -> io::Result<Event> {
        let event = Event::read(&self.fde, bytes)?;
        if event.header().event_type_raw() == FORMAT_DESCRIPTION {
            let fde = event.read_event::<FormatDescriptionEvent<'_>>()?;
            self.fde = fde.into_owned().with_footer(event.footer());
        }
        Ok(event)
    }

    /// The format of events inside a transaction payload: the same, minus checksums.
    fn inner_format(&self) -> FormatDescriptionEvent<'static> {
        let mut footer = self.fde.footer();
        footer.set_checksum_enabled(false);
        self.fde.clone().with_footer(footer)
    }
}

const FORMAT_DESCRIPTION: u8 = mysql_async::binlog::EventType::FORMAT_DESCRIPTION_EVENT as u8;

fn feed_event(
    reader: &mut FrameReader,
    assembler: &mut Assembler,
    bytes: &[u8],
    out: &mut Vec<SourceMessage>,
) -> Result<(), StepError> {
    let event = reader
        .read(bytes)
        .map_err(|e| StepError::Parse(e.to_string()))?;
    assembler.feed(&event, out).map_err(StepError::Event)?;
    if event.header().event_type_raw() == TRANSACTION_PAYLOAD {
        feed_payload(reader, assembler, &event, out)?;
    }
    Ok(())
}

/// Streams the inner events of a TRANSACTION_PAYLOAD (zstd) without inflating it whole.
fn feed_payload(
    reader: &FrameReader,
    assembler: &mut Assembler,
    event: &Event,
    out: &mut Vec<SourceMessage>,
) -> Result<(), StepError> {
    let parse = |e: io::Error| StepError::Parse(format!("transaction payload: {e}"));
    let payload = event
        .read_event::<TransactionPayloadEvent<'_>>()
        .map_err(parse)?;
    let mut inner = payload.decompressed().map_err(parse)?;
    let format = reader.inner_format();
    while inner.has_data_left().map_err(parse)? {
        let inner_event = Event::read(&format, &mut inner).map_err(parse)?;
        assembler
            .feed(&inner_event, out)
            .map_err(StepError::Event)?;
    }
    Ok(())
}

fn current_gtids(assembler: &Assembler) -> GtidTracker {
    assembler.gtid_tracker().clone()
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_up_to(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
