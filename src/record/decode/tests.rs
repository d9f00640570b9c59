//! Decoding chunks: every record a row or a dead record, whatever the payload.

use super::*;
use crate::record::schema::TimeFormat;
use crate::record::schema::OFFSET_COL;
use proptest::prelude::*;

const SCHEMA: &str = r#"{"type":"record","name":"p","fields":[
    {"name":"id","type":"string"},
    {"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":12,"scale":2}},
    {"name":"status","type":{"type":"enum","name":"st","symbols":["OK","FAILED"]}},
    {"name":"note","type":["null","string"]},
    {"name":"ts","type":"string"}]}"#;

fn decoder() -> ChunkDecoder {
    ChunkDecoder::new(
        TableSchema::parse(SCHEMA).unwrap(),
        EventTime::Field {
            name: "ts".into(),
            format: TimeFormat::Rfc3339,
        },
    )
}

fn good(i: i64) -> String {
    format!(
        r#"{{"id":"e{i}","amount":"12.50","status":"OK","ts":"2026-11-24T13:{:02}:00Z"}}"#,
        i % 60
    )
}

fn offsets(d: &Decoded) -> Vec<i64> {
    d.batch
        .as_ref()
        .map(|b| {
            b.column_by_name(OFFSET_COL)
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .unwrap_or_default()
}

#[test]
fn decodes_a_clean_chunk() {
    let mut c = RawChunk::default();
    for i in 0..100 {
        c.push(1000 + i, Some(5), None, Some(good(i).as_bytes()));
    }
    let d = decoder().decode(&c, "t", 3);
    assert!(
        d.dead.is_empty(),
        "{:?}",
        d.dead.iter().map(|r| &r.error).collect::<Vec<_>>()
    );
    assert_eq!(offsets(&d), (1000..1100).collect::<Vec<_>>());
    assert_eq!(d.event_ms[0], 1_795_525_200_000);
    assert_eq!(d.batch.unwrap().num_columns(), 9);
}

#[test]
fn isolates_every_kind_of_bad_record() {
    let bad: Vec<(&str, Option<&[u8]>)> = vec![
        ("truncated", Some(br#"{"id":"x","amount":"1.00","#)),
        ("garbage", Some(b"\xff\xfe not json")),
        (
            "two values",
            Some(br#"{"id":"a","amount":"1","status":"OK","ts":"2026-11-24T00:00:00Z"}{"id":"b"}"#),
        ),
        (
            "wrong type",
            Some(br#"{"id":"a","amount":"abc","status":"OK","ts":"2026-11-24T00:00:00Z"}"#),
        ),
        (
            "missing field",
            Some(br#"{"amount":"1","status":"OK","ts":"2026-11-24T00:00:00Z"}"#),
        ),
        (
            "bad enum",
            Some(br#"{"id":"a","amount":"1","status":"MAYBE","ts":"2026-11-24T00:00:00Z"}"#),
        ),
        (
            "bad time",
            Some(br#"{"id":"a","amount":"1","status":"OK","ts":"yesterday"}"#),
        ),
        ("empty", Some(b"")),
        ("tombstone", None),
        ("array", Some(b"[1,2,3]")),
        ("scalar", Some(b"42")),
        ("nested open", Some(br#"{"id":"#)),
    ];
    let mut c = RawChunk::default();
    let mut expected_bad = Vec::new();
    let mut offset = 0;
    for (_, payload) in &bad {
        c.push(offset, None, Some(b"k"), Some(good(offset).as_bytes()));
        offset += 1;
        c.push(offset, None, None, *payload);
        expected_bad.push(offset);
        offset += 1;
    }
    c.push(offset, None, None, Some(good(offset).as_bytes()));
    let d = decoder().decode(&c, "t", 0);
    let dead: Vec<i64> = d.dead.iter().map(|r| r.offset).collect();
    assert_eq!(
        dead,
        expected_bad,
        "{:?}",
        d.dead
            .iter()
            .map(|r| (r.offset, &r.error))
            .collect::<Vec<_>>()
    );
    let good_offsets: Vec<i64> = (0..=offset).step_by(2).collect();
    assert_eq!(offsets(&d), good_offsets);
    assert_eq!(d.event_ms.len(), good_offsets.len());
}

#[test]
fn kafka_timestamp_and_epoch_event_times() {
    let schema = TableSchema::parse(
        r#"{"type":"record","name":"r","fields":[{"name":"id","type":"string"},{"name":"s","type":["null","long"]},{"name":"ms","type":"long"}]}"#,
    )
    .unwrap();
    let mut c = RawChunk::default();
    c.push(
        0,
        Some(1_000),
        None,
        Some(br#"{"id":"a","s":1700000000,"ms":1700000000123}"#),
    );
    c.push(1, None, None, Some(br#"{"id":"b","s":null,"ms":5}"#));
    let by_kafka = ChunkDecoder::new(schema.clone(), EventTime::KafkaTimestamp).decode(&c, "t", 0);
    assert_eq!(by_kafka.event_ms, vec![1_000]);
    assert_eq!(by_kafka.dead.len(), 1);
    assert!(by_kafka.dead[0].error.contains("Kafka timestamp"));
    let secs = EventTime::Field {
        name: "s".into(),
        format: TimeFormat::EpochSeconds,
    };
    let d = ChunkDecoder::new(schema.clone(), secs).decode(&c, "t", 0);
    assert_eq!(d.event_ms, vec![1_700_000_000_000]);
    assert_eq!(d.dead.len(), 1);
    assert!(d.dead[0].error.contains("null"), "{}", d.dead[0].error);
    let ms = EventTime::Field {
        name: "ms".into(),
        format: TimeFormat::EpochMillis,
    };
    let d = ChunkDecoder::new(schema, ms).decode(&c, "t", 0);
    assert_eq!(d.event_ms, vec![1_700_000_000_123, 5]);
}

#[test]
fn decodes_nested_and_logical_types() {
    let schema = TableSchema::parse(
        r#"{"type":"record","name":"r","fields":[
          {"name":"ts","type":{"type":"long","logicalType":"timestamp-micros"}},
          {"name":"day","type":{"type":"int","logicalType":"date"}},
          {"name":"amt","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":3}},
          {"name":"tags","type":{"type":"array","items":"string"}},
          {"name":"attrs","type":{"type":"map","values":"long"}},
          {"name":"card","type":["null",{"type":"record","name":"card","fields":[{"name":"bin","type":"string"},{"name":"exp","type":"int"}]}]},
          {"name":"raw","type":"bytes"},
          {"name":"fx","type":{"type":"fixed","name":"f2","size":2}}]}"#,
    )
    .unwrap();
    let et = EventTime::Field {
        name: "ts".into(),
        format: TimeFormat::Logical,
    };
    let dec = ChunkDecoder::new(schema, et);
    let mut c = RawChunk::default();
    c.push(7, None, None, Some(br#"{"ts":"2026-11-24T13:45:00.5Z","day":20000,"amt":"12.345","tags":["a","b"],"attrs":{"x":1},"card":{"bin":"4242","exp":2712},"raw":"00ff","fx":"abcd"}"#));
    c.push(8, None, None, Some(br#"{"ts":1795527900000000,"day":1,"amt":1.5,"tags":[],"attrs":{},"card":null,"raw":"","fx":"0000"}"#));
    let d = dec.decode(&c, "t", 0);
    assert!(
        d.dead.is_empty(),
        "{:?}",
        d.dead.iter().map(|r| &r.error).collect::<Vec<_>>()
    );
    assert_eq!(d.event_ms, vec![1_795_527_900_500, 1_795_527_900_000]);
    let b = d.batch.unwrap();
    assert_eq!(b.num_rows(), 2);
    assert_eq!(b.column_by_name("card").unwrap().null_count(), 1);
}

#[test]
fn depth_check_skips_strings() {
    assert!(!too_deep(
        format!(r#"{{"s":"{}"}}"#, "[".repeat(500)).as_bytes()
    ));
    assert!(!too_deep(
        format!(r#"{{"s":"\"{}"}}"#, "{".repeat(500)).as_bytes()
    ));
    assert!(too_deep("[".repeat(129).as_bytes()));
    assert!(!too_deep(
        format!("{}{}", "[".repeat(128), "]".repeat(128)).as_bytes()
    ));
}

#[test]
fn hostile_payloads_never_panic() {
    let deep_array = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!(
        r#"{{"id":"x","amount":"1","status":"OK","ts":"2026-11-24T00:00:00Z","extra":{}{}}}"#,
        "{\"a\":".repeat(50_000),
        "}".repeat(50_000)
    );
    let huge_string = format!(
        r#"{{"id":"{}","amount":"1","status":"OK","ts":"2026-11-24T00:00:00Z"}}"#,
        "x".repeat(8 << 20)
    );
    let payloads: Vec<Vec<u8>> = vec![
        deep_array.into_bytes(),
        deep_object.into_bytes(),
        huge_string.into_bytes(),
        vec![0xC3, 0x28, b'{', b'}'],
        br#"{"id":"\ud800","amount":"1","status":"OK","ts":"2026-11-24T00:00:00Z"}"#.to_vec(),
        br#"{"id":1,"amount":true,"status":null,"ts":5}"#.to_vec(),
        b"{}".to_vec(),
        b"null".to_vec(),
    ];
    for (k, p) in payloads.iter().enumerate() {
        eprintln!("hostile payload {k}");
        let mut c = RawChunk::default();
        c.push(k as i64, None, None, Some(p));
        let d = decoder().decode(&c, "t", 0);
        let mut all = offsets(&d);
        all.extend(d.dead.iter().map(|r| r.offset));
        assert_eq!(all, vec![k as i64]);
    }
}

proptest! {
    #[test]
    fn every_record_is_a_row_or_dead(
        payloads in proptest::collection::vec(
            prop_oneof![
                Just(None),
                (0i64..1000).prop_map(|i| Some(good(i).into_bytes())),
                proptest::collection::vec(any::<u8>(), 0..40).prop_map(Some),
                "[{}\\[\\]\":,a-z0-9 ]{0,30}".prop_map(|s| Some(s.into_bytes())),
            ],
            0..60,
        )
    ) {
        let mut c = RawChunk::default();
        for (i, p) in payloads.iter().enumerate() {
            c.push(i as i64, None, None, p.as_deref());
        }
        let d = decoder().decode(&c, "t", 0);
        let mut all: Vec<i64> = offsets(&d);
        all.extend(d.dead.iter().map(|r| r.offset));
        all.sort();
        prop_assert_eq!(all, (0..payloads.len() as i64).collect::<Vec<_>>());
        prop_assert_eq!(d.event_ms.len(), offsets(&d).len());
    }
}
