//! Criterion micro-benchmarks of the hot pieces, so a regression shows up in isolation:
//! batch decoding, window assignment, buffering and gathering by window, Parquet encoding.

use arrow::array::RecordBatch;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sluice::config::{Compression, EventTime};
use sluice::ops::generate::{generate, GenSpec};
use sluice::record::buffer::{DecodedChunk, PartitionBuffer};
use sluice::record::decode::{ChunkDecoder, Decoded, RawChunk};
use sluice::record::schema::TableSchema;
use sluice::record::schema::TimeFormat;
use sluice::record::window::{group_by_window, WindowSize};

const N: usize = 8192;

fn chunk(spec: &GenSpec) -> RawChunk {
    let mut c = RawChunk::default();
    let mut i = 0;
    generate(spec, |r| {
        c.push(i, None, None, Some(&r.payload));
        i += 1;
    });
    c
}

fn benches(c: &mut Criterion) {
    let schema = TableSchema::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/payment.avsc"
    )))
    .unwrap();
    let dec = ChunkDecoder::new(
        schema.clone(),
        EventTime::Field {
            name: "created_at".into(),
            format: TimeFormat::Rfc3339,
        },
    );
    let hourly = GenSpec {
        count: N as u64,
        span_ms: 3 * 3_600_000,
        ..Default::default()
    };
    let raw = chunk(&hourly);
    let window = WindowSize::from_millis(3_600_000).unwrap();

    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("decode 8192 payment events", |b| {
        b.iter(|| dec.decode(&raw, "t", 0))
    });
    // The schema `sluice init` infers for the same events: `created_at` a timestamp column
    // (its RFC 3339 strings parsed at decode time) instead of a string.
    let mut inferred: serde_json::Value = serde_json::from_str(&schema.avsc).unwrap();
    for f in inferred["fields"].as_array_mut().unwrap() {
        if f["name"] == "created_at" {
            f["type"] = serde_json::json!({"type": "long", "logicalType": "timestamp-micros"});
        }
    }
    let as_timestamp = ChunkDecoder::new(
        TableSchema::parse(&inferred.to_string()).unwrap(),
        EventTime::Field {
            name: "created_at".into(),
            format: TimeFormat::Logical,
        },
    );
    g.bench_function(
        "decode 8192 payment events, created_at a timestamp column",
        |b| b.iter(|| as_timestamp.decode(&raw, "t", 0)),
    );
    let bad = chunk(&GenSpec {
        malformed_permille: 10,
        ..hourly.clone()
    });
    g.bench_function("decode 8192 events, 1% malformed", |b| {
        b.iter(|| dec.decode(&bad, "t", 0))
    });
    let decoded = dec.decode(&raw, "t", 0);
    let batch = decoded.batch.clone().unwrap();
    g.bench_function("group_by_window 8192 rows", |b| {
        b.iter(|| group_by_window(window, &decoded.event_ms))
    });
    let scattered = chunk(&GenSpec {
        scatter: true,
        span_ms: 1000 * 3_600_000,
        ..hourly.clone()
    });
    let sd = dec.decode(&scattered, "t", 0);
    let sb = sd.batch.clone().unwrap();
    // Buffering a decoded chunk by window, then gathering each window's rows for its file.
    let buffer_and_gather = |batch: &RecordBatch, event_ms: &[i64]| {
        let mut buf = PartitionBuffer::default();
        buf.push(
            DecodedChunk::new(
                Decoded {
                    batch: Some(batch.clone()),
                    event_ms: event_ms.to_vec(),
                    dead: Vec::new(),
                    interrupted: None,
                },
                window,
            )
            .unwrap(),
        );
        buf.windows()
            .map(|(_, w)| buf.window_batches(w).unwrap().len())
            .sum::<usize>()
    };
    g.bench_function("buffer + gather by window, 8192 rows, 3 windows", |b| {
        b.iter(|| buffer_and_gather(&batch, &decoded.event_ms))
    });
    g.bench_function("buffer + gather by window, 8192 rows, 1000 windows", |b| {
        b.iter(|| buffer_and_gather(&sb, &sd.event_ms))
    });
    let props = sluice::record::encode::writer_properties(Compression::Zstd(1), 1_000_000);
    g.bench_function("encode 8192 rows zstd", |b| {
        b.iter_batched(
            || vec![batch.clone()],
            |v| sluice::record::encode::encode(&schema.table, &v, &props).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
    // A small window's file: the per-file cost (column writers, footer) shows here.
    let mut g = c.benchmark_group("small file");
    g.throughput(Throughput::Elements(500));
    let small = batch.slice(0, 500);
    g.bench_function("encode 500 rows zstd", |b| {
        b.iter(|| {
            sluice::record::encode::encode(&schema.table, std::slice::from_ref(&small), &props)
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(micro, benches);
criterion_main!(micro);
