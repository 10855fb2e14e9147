//! The staged files: a table's encoded rows as gzip-compressed CSV parts, each a file of the
//! COPY's manifest.
//!
//! Rows arrive in chunks of whole rows as the batch holds them, each ending in
//! [`ROW_END`] (0xFF, see [`super::encode`]); the files end each row with `\n`, so every 0xFF
//! becomes a newline on its way into the compressor (a copy and one vectorised scan per
//! window, no per-byte loop). A part is closed once its compressed size reaches `part_bytes`,
//! checked after each chunk: a part never splits a row, and holds at least one chunk.
//!
//! Compression level: [`DEFAULT_LEVEL`] is 1, chosen with `cargo bench --bench
//! redshift_encode` (bench/README.md) on W1-like rows, one core of the shared 2-core machine:
//! compression, not encoding, is the cost (the encoder alone writes 1.7-2.5M rows/s). Level 1
//! compressed the CSV 3.0x at 75-100 MB/s, level 3 3.25x at 47-58 MB/s, level 6 3.6x at 19-25
//! MB/s. Only level 1 keeps typed rows to gzip files above the 300k rows/s a batch needs
//! (324-411k rows/s; level 3 gave 176-229k, level 6 110-137k). The 19% more bytes than level 6
//! cost S3 transfer and COPY reading, both parallel and cheap beside a core's time on the
//! batch's path.

use std::io::{self, Write as _};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;

use super::encode::ROW_END;

/// The compression level of staged files (see the module docs for the measurement).
pub const DEFAULT_LEVEL: Compression = Compression::new(1);

/// How much of a chunk is copied (terminators turned into newlines) before it is compressed:
/// small enough to stay in cache between the copy and the compressor.
const WINDOW: usize = 64 * 1024;

/// One finished file: gzip-compressed CSV of whole rows.
#[derive(Debug, Clone)]
pub struct Part {
    /// The gzip file.
    pub bytes: Bytes,
    /// Rows in it.
    pub rows: u64,
    /// Its size uncompressed (the CSV).
    pub raw_bytes: u64,
}

/// Compresses a table's rows into parts of about `part_bytes` each.
pub struct GzipParts {
    part_bytes: usize,
    level: Compression,
    /// The part being written, once a row is in it.
    current: Option<Current>,
    /// A window of rows with newlines for terminators, on its way to the compressor.
    window: Vec<u8>,
}

/// The open part.
struct Current {
    encoder: GzEncoder<Vec<u8>>,
    rows: u64,
    raw_bytes: u64,
}

impl std::fmt::Debug for GzipParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GzipParts")
            .field("part_bytes", &self.part_bytes)
            .field("level", &self.level.level())
            .field("open_rows", &self.current.as_ref().map_or(0, |c| c.rows))
            .finish()
    }
}

impl GzipParts {
    /// A writer closing a part once its compressed size reaches `part_bytes`, compressing at
    /// `level` ([`DEFAULT_LEVEL`] unless measured otherwise).
    pub fn new(part_bytes: usize, level: Compression) -> GzipParts {
        GzipParts {
            part_bytes: part_bytes.max(1),
            level,
            current: None,
            window: Vec::with_capacity(WINDOW),
        }
    }

    /// Adds `rows` (whole rows, each ending in [`ROW_END`]) to the open part; returns the part
    /// when it reached its size with them. Rows not ending in [`ROW_END`] are refused: a part
    /// would end in the middle of a row.
    pub fn write(&mut self, rows: &[u8]) -> io::Result<Option<Part>> {
        if rows.is_empty() {
            return Ok(None);
        }
        if rows.last() != Some(&ROW_END) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a chunk of rows must end with the row terminator 0xFF",
            ));
        }
        let level = self.level;
        let current = self.current.get_or_insert_with(|| Current {
            encoder: GzEncoder::new(Vec::new(), level),
            rows: 0,
            raw_bytes: 0,
        });
        for piece in rows.chunks(WINDOW) {
            self.window.clear();
            self.window.extend_from_slice(piece);
            for at in memchr::memchr_iter(ROW_END, piece) {
                self.window[at] = b'\n';
                current.rows += 1;
            }
            current.encoder.write_all(&self.window)?;
        }
        current.raw_bytes += rows.len() as u64;
        // What the compressor has output so far: behind by what it still holds (tens of KiB).
        if current.encoder.get_ref().len() >= self.part_bytes {
            return self.close();
        }
        Ok(None)
    }

    /// Closes the open part, if any row is in it, and returns it.
    pub fn finish(mut self) -> io::Result<Option<Part>> {
        self.close()
    }

    fn close(&mut self) -> io::Result<Option<Part>> {
        let Some(current) = self.current.take() else {
            return Ok(None);
        };
        let bytes = current.encoder.finish()?;
        Ok(Some(Part {
            bytes: Bytes::from(bytes),
            rows: current.rows,
            raw_bytes: current.raw_bytes,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    /// The CSV in a part.
    fn gunzip(part: &Part) -> Vec<u8> {
        let mut csv = Vec::new();
        flate2::read::GzDecoder::new(&part.bytes[..])
            .read_to_end(&mut csv)
            .unwrap();
        assert_eq!(csv.len() as u64, part.raw_bytes);
        csv
    }

    /// `n` rows of two fields, the second quoted and holding a newline and a comma.
    fn rows(first: usize, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in first..first + n {
            out.extend_from_slice(format!("{i},\"line one,\nline {i} \"\"two\"\"\"").as_bytes());
            out.push(ROW_END);
        }
        out
    }

    /// The records of a CSV file, as the loader reads them.
    fn records(csv: &[u8]) -> Vec<(u64, String)> {
        csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(csv)
            .records()
            .map(|r| {
                let r = r.unwrap();
                (r[0].parse().unwrap(), r[1].to_owned())
            })
            .collect()
    }

    #[test]
    fn a_part_gunzips_to_the_rows_with_newlines() {
        let mut parts = GzipParts::new(1 << 20, DEFAULT_LEVEL);
        let chunk = rows(0, 3);
        assert!(parts.write(&chunk).unwrap().is_none());
        assert!(parts.write(&[]).unwrap().is_none());
        let part = parts.finish().unwrap().unwrap();
        assert_eq!((part.rows, part.raw_bytes), (3, chunk.len() as u64));
        let csv = gunzip(&part);
        let want: Vec<u8> = chunk
            .iter()
            .map(|&b| if b == ROW_END { b'\n' } else { b })
            .collect();
        assert_eq!(csv, want);
        assert!(!csv.contains(&ROW_END));
        assert_eq!(
            records(&csv)[1],
            (1, "line one,\nline 1 \"two\"".to_owned())
        );
        // Nothing written, nothing to stage.
        assert!(
            GzipParts::new(10, DEFAULT_LEVEL)
                .finish()
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn parts_close_at_their_size_between_chunks_and_keep_rows_whole() {
        // Rows of random letters, so that parts fill up quickly.
        let mut parts = GzipParts::new(4096, Compression::new(1));
        let mut finished = Vec::new();
        let (chunks, per_chunk) = (200, 50);
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for c in 0..chunks {
            let mut chunk = Vec::new();
            for i in c * per_chunk..(c + 1) * per_chunk {
                let noise: String = (0..40)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        char::from(b'a' + (state % 26) as u8)
                    })
                    .collect();
                chunk.extend_from_slice(format!("{i},\"{noise}\n\"").as_bytes());
                chunk.push(ROW_END);
            }
            if let Some(part) = parts.write(&chunk).unwrap() {
                finished.push(part);
            }
        }
        finished.extend(parts.finish().unwrap());
        assert!(finished.len() > 3, "{} parts", finished.len());
        let mut next = 0;
        for part in &finished {
            // A part holds whole chunks: whole rows, in order.
            let got = records(&gunzip(part));
            assert_eq!(got.len() as u64, part.rows);
            assert_eq!(part.rows % per_chunk as u64, 0);
            for (id, text) in got {
                assert_eq!(id, next);
                assert!(text.ends_with('\n') && text.len() == 41, "{text:?}");
                next += 1;
            }
        }
        assert_eq!(next, (chunks * per_chunk) as u64);
        // Every part but the last reached the size; none is far past it (the compressor
        // holds back up to a block, tens of KiB, before its output counts).
        for part in &finished[..finished.len() - 1] {
            assert!(
                (4096..64 * 1024).contains(&part.bytes.len()),
                "{}",
                part.bytes.len()
            );
        }
    }

    #[test]
    fn rows_with_newlines_stay_whole_across_windows() {
        // A chunk longer than the copy window, with quoted newlines everywhere.
        let chunk = rows(0, 20_000);
        assert!(chunk.len() > 4 * WINDOW);
        let mut parts = GzipParts::new(usize::MAX, Compression::new(3));
        assert!(parts.write(&chunk).unwrap().is_none());
        let part = parts.finish().unwrap().unwrap();
        let got = records(&gunzip(&part));
        assert_eq!((got.len(), part.rows), (20_000, 20_000));
        assert_eq!(
            got[19_999],
            (19_999, "line one,\nline 19999 \"two\"".into())
        );
    }

    #[test]
    fn a_chunk_ending_inside_a_row_is_refused() {
        let mut parts = GzipParts::new(1 << 20, DEFAULT_LEVEL);
        let chunk = rows(0, 2);
        let err = parts.write(&chunk[..chunk.len() - 1]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(parts.finish().unwrap().is_none());
    }
}
