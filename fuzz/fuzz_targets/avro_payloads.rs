//! Avro payloads from anyone who can write to a topic: raw Avro datums, and the Confluent wire
//! format (magic byte, schema id, datum) with writer schemas that differ from the reader's. No
//! input may panic or hang, and every record must come back a row or a dead letter.
//!
//! Input: a selector byte (raw Avro, or Confluent), then records, each prefixed by its length
//! (one byte; at most 64 records).
#![no_main]

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use sluice::config::{EventTime, PayloadFormat, WriterSchemas};
use sluice::record::chunk::RawChunk;
use sluice::record::decode::ChunkDecoder;
use sluice::record::schema::TableSchema;

const PAYMENT: &str = include_str!("../../schemas/payment.avsc");

/// Writer schemas by id: 1 the reader's own; 2 an older one without `country` and with an
/// int amount in cents as a plain long (not resolvable to the decimal: dead letters); 3 a newer
/// one with an extra field.
fn writer_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-fuzz-avro-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let older = PAYMENT.replace(
        r#"{"name": "country", "type": ["null", "string"], "default": null},"#,
        "",
    );
    let newer = PAYMENT.replace(
        r#"{"name": "created_at","#,
        r#"{"name": "channel", "type": "string", "default": "web"}, {"name": "created_at","#,
    );
    for (id, text) in [(1, PAYMENT.to_string()), (2, older), (3, newer)] {
        std::fs::write(dir.join(format!("{id}.avsc")), text).expect("a writer schema");
    }
    dir
}

fn decoders() -> [ChunkDecoder; 2] {
    {
        let schema = TableSchema::parse(PAYMENT).expect("the schema parses");
        let make = |format, writers: Option<&WriterSchemas>| {
            ChunkDecoder::for_format(
                schema.clone(),
                EventTime::KafkaTimestamp,
                format,
                writers,
                Arc::new(AtomicBool::new(false)),
            )
            .expect("an Avro decoder")
        };
        let writers = WriterSchemas::Directory(writer_dir());
        [
            make(PayloadFormat::Avro, None),
            make(PayloadFormat::ConfluentAvro, Some(&writers)),
        ]
    }
}

thread_local! {
    static DECODERS: [ChunkDecoder; 2] = decoders();
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    DECODERS.with(|all| check(&all[usize::from(which % 2)], rest));
});

fn check(d: &ChunkDecoder, mut rest: &[u8]) {
    let mut chunk = RawChunk::default();
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        chunk.push(chunk.len() as i64, Some(1_000), None, Some(&tail[..n]));
        rest = &tail[n..];
        if chunk.len() == 64 {
            break;
        }
    }
    let out = d.decode(&chunk, "t", 0);
    assert!(
        out.interrupted.is_none(),
        "a schema directory never interrupts"
    );
    let rows = out.batch.as_ref().map_or(0, |b| b.num_rows());
    assert_eq!(rows + out.dead.len(), chunk.len(), "records lost");
    assert_eq!(out.event_ms.len(), rows, "an event time per row");
}
