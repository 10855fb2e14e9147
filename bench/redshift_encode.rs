//! Redshift row encoding benchmark: typed rows of a W1-like table written as the Redshift sink
//! writes them, on one thread, with no server.
//!
//! The rows: a BIGINT key, three integers (INT, SMALLINT, INT), a utf8mb4 VARCHAR(255) of about
//! 40 characters, a DECIMAL(12,2), a DATETIME(6) and a TEXT that is NULL in half the rows, as
//! inserts in 1000-row transactions, generated with W1's generator (`workload.rs`). They are
//! made once, `BATCH_ROWS` of them, untimed, and every pass encodes them again (a new batch per
//! pass), `TIDEMARK_BENCH_ROWS` rows in all (default 1,000,000). Each figure is the best of
//! `TIDEMARK_BENCH_REPS` runs (default 3):
//!
//! - `CsvRows` alone: `RowEncoder::encode` of every row into one buffer (cleared per batch);
//! - through the batch: `TableChanges::push`, as the pipeline stages changes (key index, spill
//!   buffers), then its rows read back with `row_chunks`;
//! - gzip alone: the encoded rows through `GzipParts` at levels 1, 3 and 6;
//! - encode + gzip: typed rows to gzip parts, by the encoder alone and through the batch, at
//!   each level: rows/s, compressed MB/s, compression ratio.
//!
//! Then the peak RSS (`VmHWM`) of the whole run. Target: typed rows to gzip files by the encoder
//! alone at the default level, at least 300k rows/s. See `bench/README.md`.

use std::sync::Arc;
use std::time::Instant;

use flate2::Compression;

/// The `tidemark` binary's allocator, so the figures are what ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use tidemark::event::{
    ChangeEvent, Column, ColumnType, Date, DateTime, Op, Position, TableId, TableSchema,
    Transaction, Value,
};
use tidemark::sink::encode::{Row, RowEncoder, RowOp};
use tidemark::sink::redshift::encode::{CsvRows, Oversize};
use tidemark::sink::redshift::files::{DEFAULT_LEVEL, GzipParts};
use tidemark::sink::redshift::types::WideDecimal;
use tidemark::sink::{TableChanges, TargetTable};

#[allow(dead_code)] // shared by several benchmarks; this one uses its generator
mod workload;

use workload::{Gen, env_number, source_revision, vm_hwm_kb};

/// Rows per batch (the default `[batch] max_rows`): each pass encodes them all.
const BATCH_ROWS: usize = 100_000;
/// Rows per source transaction.
const TXN_ROWS: usize = 1000;
/// Compressed size at which a part is closed (the sink's).
const PART_BYTES: usize = 64 * 1024 * 1024;
/// The compression levels compared.
const LEVELS: [u32; 3] = [1, 3, 6];
/// Typed rows to gzip files by the encoder alone, at the default level (rows/s).
const TARGET_ROWS_PER_SEC: f64 = 300_000.0;

fn main() {
    let total = env_number("TIDEMARK_BENCH_ROWS", 1_000_000) as usize;
    let reps = env_number("TIDEMARK_BENCH_REPS", 3) as usize;
    let passes = total.div_ceil(BATCH_ROWS);
    let total = passes * BATCH_ROWS;
    let encoder = CsvRows::new(Oversize::Fail, WideDecimal::Text);
    let events = make_rows(BATCH_ROWS);
    let bench = Bench {
        events: &events,
        encoder,
        reps,
    };

    // One pass untimed: the CSV's size, and a check that every row reads back.
    let mut csv = Vec::new();
    bench.encode_batch(&mut csv);
    let csv_per_row = csv.len() as f64 / BATCH_ROWS as f64;
    let rows_back = csv.iter().filter(|&&b| b == 0xFF).count();
    assert_eq!(rows_back, BATCH_ROWS, "every row ends with one terminator");
    println!(
        "redshift_encode: {total} W1-like rows ({passes} batches of {BATCH_ROWS}, one thread), best of {reps}, tidemark {}",
        source_revision()
    );
    println!(
        "  rows: bigint key, int, smallint, int, varchar(255) ~40 chars, decimal(12,2), datetime(6), text (NULL in half); {csv_per_row:.1} bytes of CSV per row"
    );

    let secs = bench.best(|| {
        let mut out = Vec::with_capacity(csv.len());
        for _ in 0..passes {
            out.clear();
            bench.encode_batch(&mut out);
        }
    });
    line("encode, CsvRows alone", total, secs, None);
    let secs = bench.best(|| {
        for _ in 0..passes {
            let mut changes = bench.staged();
            let mut bytes = 0;
            for segment in 0..changes.segments.len() {
                let mut chunks = changes.row_chunks(segment);
                while let Some(chunk) = chunks.next_chunk().expect("reading rows") {
                    bytes += chunk.len();
                }
            }
            assert_eq!(bytes, csv.len());
        }
    });
    line("encode through TableChanges", total, secs, None);

    let mut default_rate = 0.0;
    for level in LEVELS {
        let compression = Compression::new(level);
        // The batch's rows as `row_chunks` hands them over: about 1 MiB each.
        let chunks = chunked(&csv);
        let mut sizes = (0, 0);
        let secs = bench.best(|| {
            sizes = (0, 0);
            for _ in 0..passes {
                let mut parts = GzipParts::new(PART_BYTES, compression);
                for chunk in &chunks {
                    add(&mut sizes, parts.write(chunk).expect("compressing"));
                }
                add(&mut sizes, parts.finish().expect("compressing"));
            }
        });
        line(
            &format!("gzip level {level} alone"),
            total,
            secs,
            Some(sizes),
        );
        let secs = bench.best(|| {
            sizes = (0, 0);
            let mut out = Vec::with_capacity(csv.len());
            for _ in 0..passes {
                out.clear();
                bench.encode_batch(&mut out);
                let mut parts = GzipParts::new(PART_BYTES, compression);
                for chunk in chunked(&out) {
                    add(&mut sizes, parts.write(chunk).expect("compressing"));
                }
                add(&mut sizes, parts.finish().expect("compressing"));
            }
        });
        line(
            &format!("encode + gzip level {level}, CsvRows alone"),
            total,
            secs,
            Some(sizes),
        );
        if compression.level() == DEFAULT_LEVEL.level() {
            default_rate = total as f64 / secs;
        }
        let secs = bench.best(|| {
            sizes = (0, 0);
            for _ in 0..passes {
                let mut changes = bench.staged();
                let mut parts = GzipParts::new(PART_BYTES, compression);
                for segment in 0..changes.segments.len() {
                    let mut chunks = changes.row_chunks(segment);
                    while let Some(chunk) = chunks.next_chunk().expect("reading rows") {
                        add(&mut sizes, parts.write(&chunk).expect("compressing"));
                    }
                }
                add(&mut sizes, parts.finish().expect("compressing"));
            }
        });
        line(
            &format!("encode + gzip level {level}, through TableChanges"),
            total,
            secs,
            Some(sizes),
        );
    }
    let rss_mb = vm_hwm_kb(None).unwrap_or(0) as f64 / 1024.0;
    println!("  peak RSS: {rss_mb:.1} MB (the rows held as typed values: {BATCH_ROWS} of them)");
    println!(
        "result: encode + gzip level {} by CsvRows alone: {default_rate:.0} rows/s (target >= {TARGET_ROWS_PER_SEC:.0}) {}",
        DEFAULT_LEVEL.level(),
        if default_rate >= TARGET_ROWS_PER_SEC {
            "PASS"
        } else {
            "FAIL"
        }
    );
}

/// What the passes share.
struct Bench<'a> {
    events: &'a [ChangeEvent],
    encoder: CsvRows,
    reps: usize,
}

impl Bench<'_> {
    /// Encodes every row with the encoder alone, appending to `out`.
    fn encode_batch(&self, out: &mut Vec<u8>) {
        for (seq, event) in self.events.iter().enumerate() {
            let values = event.after.as_deref().expect("inserts have an after image");
            let row = Row {
                change: event,
                seq: seq as u64,
                op: RowOp::Insert,
                values,
                partial: None,
            };
            self.encoder.encode(&row, out).expect("encoding");
        }
    }

    /// A batch holding every row, staged as the pipeline stages changes.
    fn staged(&self) -> TableChanges {
        let table = &self.events[0].table;
        let mut changes = TableChanges::with_encoder(
            table.id.clone(),
            TargetTable {
                schema: "bench".into(),
                table: "orders".into(),
            },
            Arc::new(self.encoder),
        );
        let mut seq = 0;
        for event in self.events {
            changes.push(event, &mut seq).expect("encoding");
        }
        changes
    }

    /// The shortest of `reps` timed runs of `run`, in seconds.
    fn best(&self, mut run: impl FnMut()) -> f64 {
        (0..self.reps)
            .map(|_| {
                let start = Instant::now();
                run();
                start.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    }
}

/// Adds a finished part's raw and compressed sizes to `sizes`.
fn add(sizes: &mut (u64, u64), part: Option<tidemark::sink::redshift::files::Part>) {
    if let Some(part) = part {
        sizes.0 += part.raw_bytes;
        sizes.1 += part.bytes.len() as u64;
    }
}

/// `rows` cut at row ends into chunks of about 1 MiB, as a batch's `row_chunks` gives them.
fn chunked(rows: &[u8]) -> Vec<&[u8]> {
    const CHUNK: usize = 1 << 20;
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < rows.len() {
        let from = (start + CHUNK).min(rows.len() - 1);
        let end = memchr::memchr(0xFF, &rows[from..]).map_or(rows.len(), |at| from + at + 1);
        chunks.push(&rows[start..end]);
        start = end;
    }
    chunks
}

/// Prints one figure: rows/s, and for compressed output MB/s and the ratio.
fn line(what: &str, rows: usize, secs: f64, sizes: Option<(u64, u64)>) {
    let rate = rows as f64 / secs;
    match sizes {
        None => println!("  {what:<42} {secs:6.2} s  {rate:>9.0} rows/s"),
        Some((raw, compressed)) => {
            let mb = |bytes: u64| bytes as f64 / 1e6;
            println!(
                "  {what:<42} {secs:6.2} s  {rate:>9.0} rows/s  {:6.1} MB/s of CSV in  {:5.1} MB/s gzip out  ratio {:.2}x",
                mb(raw) / secs,
                mb(compressed) / secs,
                raw as f64 / compressed as f64
            );
        }
    }
}

/// `rows` inserts into a W1-like table, in transactions of [`TXN_ROWS`].
fn make_rows(rows: usize) -> Vec<ChangeEvent> {
    let int = |bits| ColumnType::Int {
        bits,
        unsigned: false,
    };
    let text = |max_bytes| ColumnType::Text {
        max_bytes: Some(max_bytes),
        charset: "utf8mb4".into(),
    };
    let columns = [
        ("id", int(64)),
        ("qty", int(32)),
        ("status_code", int(16)),
        ("customer_id", int(32)),
        ("sku", text(4 * 255)),
        (
            "amount",
            ColumnType::Decimal {
                precision: 12,
                scale: 2,
            },
        ),
        ("created_at", ColumnType::DateTime { fsp: 6 }),
        ("note", text(65_535)),
    ];
    let table = Arc::new(TableSchema {
        id: TableId::new("bench", "orders"),
        columns: columns
            .into_iter()
            .map(|(name, ty)| Column {
                name: name.into(),
                ty,
                nullable: name != "id",
            })
            .collect(),
        primary_key: vec![0],
    });
    let mut draw = Gen::new(0x7265_6473_6869_6674);
    let mut transaction = None;
    (0..rows)
        .map(|i| {
            if i % TXN_ROWS == 0 {
                transaction = Some(Arc::new(Transaction {
                    id: format!("bench:{i}"),
                    gtid: None,
                    commit_ts_micros: 1_735_689_600_000_000 + i as i64 * 1000,
                    log_coordinate: (i / TXN_ROWS) as u64 + 1,
                }));
            }
            let transaction = transaction.clone().expect("set at the first row");
            let mut sku = String::new();
            draw.text(&mut sku, 30, 50);
            let cents = draw.range(100, 9_999_999);
            let note = if draw.next().is_multiple_of(2) {
                Value::Null
            } else {
                let mut note = String::new();
                draw.text(&mut note, 10, 60);
                Value::Text(note)
            };
            let after = vec![
                Value::Int(i as i64 + 1),
                Value::Int(draw.range(1, 500) as i64),
                Value::Int(draw.range(1, 9) as i64 * 100),
                Value::Int(draw.range(1, 2_000_000) as i64),
                Value::Text(sku),
                Value::Decimal(format!("{}.{:02}", cents / 100, cents % 100)),
                Value::DateTime(DateTime {
                    date: Date {
                        year: 2024,
                        month: draw.range(1, 12) as u8,
                        day: draw.range(1, 28) as u8,
                    },
                    hour: draw.range(0, 23) as u8,
                    minute: draw.range(0, 59) as u8,
                    second: draw.range(0, 59) as u8,
                    micros: draw.range(0, 999_999) as u32,
                }),
                note,
            ];
            ChangeEvent {
                source: "bench".into(),
                table: table.clone(),
                op: Op::Insert,
                before: None,
                after: Some(after),
                position: Position {
                    txn: transaction.log_coordinate,
                    seq: (i % TXN_ROWS) as u32,
                },
                transaction,
            }
        })
        .collect()
}
