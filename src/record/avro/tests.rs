//! Avro payloads: every record a row or a dead record; writer versions resolved into one shape.
//! Datums are encoded here by hand (zig-zag varints, length-prefixed strings), not by
//! arrow-avro.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use arrow::array::{Array, Int64Array, StringArray};

use crate::record::decode::{ChunkDecoder, Decoded, RawChunk};
use crate::record::options::{EventTime, PayloadFormat, WriterSchemas};
use crate::record::schema::{TableSchema, TimeFormat, OFFSET_COL};

/// The reader (table) schema: v3.
const V3: &str = r#"{"type":"record","name":"ev","fields":[
    {"name":"id","type":"string"},
    {"name":"n","type":"long"},
    {"name":"status","type":{"type":"enum","name":"st","symbols":["OK","FAILED"]}},
    {"name":"note","type":["null","string"],"default":null},
    {"name":"tier","type":"string","default":"basic"},
    {"name":"ts","type":"string"}]}"#;
/// v1: `n` an int, no `note`, no `tier`.
const V1: &str = r#"{"type":"record","name":"ev","fields":[
    {"name":"id","type":"string"},
    {"name":"n","type":"int"},
    {"name":"status","type":{"type":"enum","name":"st","symbols":["OK","FAILED"]}},
    {"name":"ts","type":"string"}]}"#;
/// v2: adds `note`, and a field v3 removed.
const V2: &str = r#"{"type":"record","name":"ev","fields":[
    {"name":"id","type":"string"},
    {"name":"n","type":"long"},
    {"name":"status","type":{"type":"enum","name":"st","symbols":["OK","FAILED"]}},
    {"name":"note","type":["null","string"],"default":null},
    {"name":"gone","type":"double"},
    {"name":"ts","type":"string"}]}"#;

fn long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

fn ts(i: i64) -> String {
    format!("2026-11-24T13:{:02}:00Z", i % 60)
}

fn v1(i: i64) -> Vec<u8> {
    let mut o = Vec::new();
    string(&mut o, &format!("e{i}"));
    long(&mut o, i); // int: same encoding
    long(&mut o, 0); // OK
    string(&mut o, &ts(i));
    o
}

fn v2(i: i64, note: Option<&str>) -> Vec<u8> {
    let mut o = Vec::new();
    string(&mut o, &format!("e{i}"));
    long(&mut o, i);
    long(&mut o, 1); // FAILED
    match note {
        None => long(&mut o, 0),
        Some(n) => {
            long(&mut o, 1);
            string(&mut o, n);
        }
    }
    o.extend_from_slice(&1.5f64.to_le_bytes());
    string(&mut o, &ts(i));
    o
}

fn v3(i: i64) -> Vec<u8> {
    let mut o = Vec::new();
    string(&mut o, &format!("e{i}"));
    long(&mut o, i);
    long(&mut o, 0);
    long(&mut o, 1);
    string(&mut o, "n3");
    string(&mut o, "gold");
    string(&mut o, &ts(i));
    o
}

fn framed(id: u32, body: &[u8]) -> Vec<u8> {
    let mut o = vec![0u8];
    o.extend_from_slice(&id.to_be_bytes());
    o.extend_from_slice(body);
    o
}

fn decoder(format: PayloadFormat, writers: Option<&WriterSchemas>) -> ChunkDecoder {
    ChunkDecoder::new(
        TableSchema::parse(V3).unwrap(),
        EventTime::Field {
            name: "ts".into(),
            format: TimeFormat::Rfc3339,
        },
    )
    .with_avro(format, writers, Arc::new(AtomicBool::new(false)))
    .unwrap()
}

fn registry_dir() -> (tempfile::TempDir, WriterSchemas) {
    let dir = tempfile::tempdir().unwrap();
    for (id, s) in [(11, V1), (12, V2), (13, V3)] {
        std::fs::write(dir.path().join(format!("{id}.avsc")), s).unwrap();
    }
    std::fs::write(
        dir.path().join("14.avsc"),
        r#"{"type":"record","name":"ev","fields":[{"name":"id","type":"long"}]}"#,
    )
    .unwrap();
    // v1 as another team names it: its own record name and namespace.
    std::fs::write(
        dir.path().join("15.avsc"),
        V1.replace(
            r#""name":"ev""#,
            r#""name":"PaymentEvent","namespace":"com.acme""#,
        ),
    )
    .unwrap();
    let w = WriterSchemas::Directory(dir.path().to_path_buf());
    (dir, w)
}

fn chunk(payloads: &[Option<Vec<u8>>]) -> RawChunk {
    let mut c = RawChunk::default();
    for (i, p) in payloads.iter().enumerate() {
        c.push(100 + i as i64, Some(1), None, p.as_deref());
    }
    c
}

fn col<'a, T: 'static>(d: &'a Decoded, name: &str) -> &'a T {
    d.batch
        .as_ref()
        .unwrap()
        .column_by_name(name)
        .unwrap()
        .as_any()
        .downcast_ref::<T>()
        .unwrap()
}

fn dead_offsets(d: &Decoded) -> Vec<i64> {
    d.dead.iter().map(|r| r.offset).collect()
}

#[test]
fn raw_avro_every_record_a_row_or_dead() {
    let d = decoder(PayloadFormat::Avro, None);
    let mut truncated = v3(2);
    truncated.truncate(5);
    let mut trailing = v3(4);
    trailing.extend_from_slice(b"xx");
    let c = chunk(&[
        Some(v3(0)),
        Some(v3(1)),
        Some(truncated),
        Some(v3(3)),
        Some(trailing),
        None,
        Some(v3(6)),
    ]);
    let out = d.decode(&c, "t", 0);
    assert_eq!(
        col::<Int64Array>(&out, OFFSET_COL).values().to_vec(),
        vec![100, 101, 103, 106]
    );
    assert_eq!(dead_offsets(&out), vec![102, 104, 105]);
    assert!(
        out.dead[1].error.contains("2 bytes past the end"),
        "{:?}",
        out.dead[1]
    );
    assert!(out.dead[2].error.contains("tombstone"));
    let ids = col::<StringArray>(&out, "id");
    assert_eq!(ids.value(2), "e3");
    assert_eq!(col::<StringArray>(&out, "tier").value(0), "gold");
    assert_eq!(out.event_ms.len(), 4);
}

#[test]
fn interleaved_writer_versions_resolve_into_one_batch_in_record_order() {
    let (_dir, w) = registry_dir();
    let d = decoder(PayloadFormat::ConfluentAvro, Some(&w));
    let mut payloads = Vec::new();
    for i in 0..30i64 {
        payloads.push(Some(match i % 3 {
            0 if i % 2 == 0 => framed(11, &v1(i)),
            0 => framed(15, &v1(i)),
            1 => framed(12, &v2(i, (i % 2 == 0).then_some("x"))),
            _ => framed(13, &v3(i)),
        }));
    }
    // Bad ones in between: an unknown id, a wrong magic byte, a short frame, a corrupt datum,
    // a writer schema that does not resolve (`id` a long).
    payloads.insert(5, Some(framed(99, &v3(0))));
    payloads.insert(9, Some(vec![1, 0, 0, 0, 13, 1, 2]));
    payloads.insert(12, Some(vec![0, 0, 0]));
    payloads.insert(20, Some(framed(12, &[0x81])));
    payloads.insert(25, Some(framed(14, &[2])));
    let c = chunk(&payloads);
    let out = d.decode(&c, "t", 3);
    assert_eq!(
        dead_offsets(&out),
        vec![105, 109, 112, 120, 125],
        "{:?}",
        out.dead
    );
    assert!(
        out.dead[0].error.contains("unknown schema id 99"),
        "{}",
        out.dead[0].error
    );
    assert!(out.dead[1].error.contains("magic byte 0x01"));
    assert!(out.dead[2].error.contains("shorter than the 5-byte prefix"));
    assert!(
        out.dead[3].error.contains("does not decode"),
        "{}",
        out.dead[3].error
    );
    assert!(
        out.dead[4].error.contains("does not resolve"),
        "{}",
        out.dead[4].error
    );
    let b = out.batch.as_ref().unwrap();
    assert_eq!(b.num_rows(), 30);
    let offs = col::<Int64Array>(&out, OFFSET_COL).values().to_vec();
    assert!(
        offs.windows(2).all(|w| w[0] < w[1]),
        "record order: {offs:?}"
    );
    let ids = col::<StringArray>(&out, "id");
    let n = col::<Int64Array>(&out, "n");
    let note = col::<StringArray>(&out, "note");
    let tier = col::<StringArray>(&out, "tier");
    let status = col::<StringArray>(&out, "status");
    for r in 0..30 {
        let i = r as i64;
        assert_eq!(ids.value(r), format!("e{i}"));
        assert_eq!(n.value(r), i, "int promoted to long");
        match i % 3 {
            0 => {
                assert!(note.is_null(r));
                assert_eq!(tier.value(r), "basic", "the reader's default");
                assert_eq!(status.value(r), "OK");
            }
            1 => {
                assert_eq!(note.is_null(r), i % 2 != 0);
                assert_eq!(tier.value(r), "basic");
                assert_eq!(status.value(r), "FAILED");
            }
            _ => assert_eq!(tier.value(r), "gold"),
        }
    }
    // The decoders are reused by the next chunk.
    let again = d.decode(&chunk(&[Some(framed(11, &v1(7)))]), "t", 3);
    assert_eq!(again.batch.unwrap().num_rows(), 1);
}

#[test]
fn a_confluent_id_0_is_looked_up_like_any_other() {
    let (_dir, w) = registry_dir();
    let d = decoder(PayloadFormat::ConfluentAvro, Some(&w));
    let out = d.decode(
        &chunk(&[Some(framed(0, &v3(1))), Some(framed(13, &v3(2)))]),
        "t",
        0,
    );
    assert_eq!(dead_offsets(&out), vec![100]);
    assert!(
        out.dead[0].error.contains("unknown schema id 0"),
        "{}",
        out.dead[0].error
    );
}
