//! Differential: JSON payloads decoded by the fast path (`record/flat.rs`) and by arrow-json
//! alone must give the same rows, event times and dead letters, chunk by chunk. Any panic, hang
//! or disagreement is a bug (the input is kept in the corpus).
//!
//! Input: a schema selector byte, then payloads separated by 0x1E (at most 64).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::config::EventTime;
use sluice::record::chunk::RawChunk;
use sluice::record::decode::ChunkDecoder;
use sluice::record::schema::{TableSchema, TimeFormat};

const PAYMENT: &str = include_str!("../../schemas/payment.avsc");

/// Every kind of column the fast path reads: nested record, array, numbers, booleans,
/// nullable strings, decimals, timestamps (RFC 3339 strings or numbers), dates, enums.
const RICH: &str = r#"{
  "type": "record", "name": "rich", "fields": [
    {"name": "id", "type": "string"},
    {"name": "n", "type": "long"},
    {"name": "i", "type": "int"},
    {"name": "x", "type": "double"},
    {"name": "ok", "type": "boolean"},
    {"name": "note", "type": ["null", "string"], "default": null},
    {"name": "amt", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 3}},
    {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "seen", "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}], "default": null},
    {"name": "day", "type": ["null", {"type": "int", "logicalType": "date"}], "default": null},
    {"name": "tags", "type": {"type": "array", "items": "string"}},
    {"name": "inner", "type": {"type": "record", "name": "inner", "fields": [
      {"name": "a", "type": "int"}, {"name": "b", "type": ["null", "double"], "default": null}]}},
    {"name": "e", "type": {"type": "enum", "name": "e", "symbols": ["A", "B"]}}
  ]}"#;

struct Paths {
    fast: ChunkDecoder,
    slow: ChunkDecoder,
}

fn paths(schema: &str, time: EventTime) -> Paths {
    let schema = TableSchema::parse(schema).expect("the fuzz schema parses");
    Paths {
        fast: ChunkDecoder::new(schema.clone(), time.clone()),
        slow: ChunkDecoder::new(schema, time).without_fast_path(),
    }
}

fn decoders() -> [Paths; 2] {
    let created = EventTime::Field {
        name: "created_at".into(),
        format: TimeFormat::Rfc3339,
    };
    [
        paths(PAYMENT, created),
        paths(RICH, EventTime::KafkaTimestamp),
    ]
}

thread_local! {
    // Decoders keep state between chunks (buffers, a parse cache): one set per thread.
    static DECODERS: [Paths; 2] = decoders();
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    DECODERS.with(|all| check(&all[usize::from(which % 2)], rest));
});

fn check(d: &Paths, rest: &[u8]) {
    let mut chunk = RawChunk::default();
    for (o, payload) in rest.split(|&b| b == 0x1e).take(64).enumerate() {
        chunk.push(o as i64, Some(1_000), None, Some(payload));
    }
    let (a, b) = (d.fast.decode(&chunk, "t", 0), d.slow.decode(&chunk, "t", 0));
    let shown = || String::from_utf8_lossy(rest).into_owned();
    assert_eq!(a.batch, b.batch, "rows differ: {}", shown());
    assert_eq!(a.event_ms, b.event_ms, "event times differ: {}", shown());
    assert_eq!(a.dead, b.dead, "dead letters differ: {}", shown());
    // Every record is a row or a dead letter.
    let rows = a.batch.as_ref().map_or(0, |b| b.num_rows());
    assert_eq!(
        rows + a.dead.len(),
        chunk.len(),
        "records lost: {}",
        shown()
    );
}
