//! A compacted topic (`cleanup.policy=compact`) whose log cleaner runs during the test: a load
//! before cleaning, a load after it, and a `backfill --replace` over the cleaned ranges. The
//! offsets the cleaner removed are recorded as not records; tombstones (null payloads) go
//! through the bad-records policy (a dead letter with the record's key, so deletions stay
//! visible). In the end the table holds exactly what Kafka holds now, and `verify --kafka`
//! confirms that no recorded non-record holds a record.

mod common;

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use common::*;

const KEYS: u64 = 150;

/// Produces ids `first..first + count` with keys cycling over `KEYS` (so later records replace
/// earlier ones); every `tombstone_every`-th record is a tombstone of its key.
fn produce_keyed(f: &Fixture, first: u64, count: u64, tombstone_every: u64) {
    let p: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &f.brokers)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let spec = sluice::ops::generate::GenSpec {
        partitions: f.partitions,
        ..spec(first, count)
    };
    let mut records = Vec::new();
    sluice::ops::generate::generate(&spec, |r| records.push(r));
    for (i, r) in records.iter().enumerate() {
        let id = first + i as u64;
        let key = format!("k{:04}", id % KEYS);
        let mut rec = BaseRecord::<String, Vec<u8>>::to(&f.topic)
            .partition(r.partition)
            .key(&key);
        if tombstone_every == 0 || !id.is_multiple_of(tombstone_every) {
            rec = rec.payload(&r.payload);
        }
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    p.poll(Duration::from_millis(10));
                    rec = back;
                }
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(60)).unwrap();
}

/// What Kafka holds now: per partition, each record's offset and whether it is a tombstone.
fn kafka_now(f: &Fixture) -> Vec<(i32, i64, bool)> {
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &f.brokers)
        .set("group.id", "probe")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    for p in 0..f.partitions {
        list.add_partition_offset(&f.topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    c.assign(&list).unwrap();
    let (mut out, mut eofs) = (Vec::new(), 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while eofs < f.partitions {
        assert!(Instant::now() < deadline, "reading the topic back");
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push((m.partition(), m.offset(), m.payload().is_none())),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => eofs += 1,
            _ => {}
        }
    }
    out
}

/// Waits until the cleaner has removed records below offset `below` of every partition.
fn wait_for_cleaning(f: &Fixture, below: &[i64]) -> Vec<(i32, i64, bool)> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let now = kafka_now(f);
        let cleaned = (0..f.partitions).all(|p| {
            let kept = now
                .iter()
                .filter(|(q, o, _)| *q == p && *o < below[p as usize])
                .count() as i64;
            kept < below[p as usize]
        });
        if cleaned {
            return now;
        }
        assert!(Instant::now() < deadline, "the log cleaner did not run");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The table holds exactly Kafka's records now: each a row, each tombstone a dead letter, and
/// every other offset of the loaded ranges recorded as not a record (checked by the broker).
fn assert_table_is_kafka(f: &Fixture) {
    let now = kafka_now(f);
    let tombstones = now.iter().filter(|(_, _, t)| *t).count() as i64;
    let rows = now.len() as i64 - tombstones;
    let r = f.read();
    assert_eq!(n(&r, "rows"), rows, "{r}");
    assert_eq!(n(&r, "dead_letters"), tombstones, "{r}");
    assert_eq!(n(&r, "distinct_offsets"), rows, "{r}");
    assert_eq!(n(&r, "dead_distinct_offsets"), tombstones, "{r}");
    let v = verify_with_kafka(f);
    assert_eq!(v["violations"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(
        v["unrecorded_non_records"].as_array().unwrap().len(),
        0,
        "{v}"
    );
}

#[test]
fn a_compacted_topic_loads_before_and_after_cleaning_and_replaces_over_cleaned_ranges() {
    let mut f = Fixture::on(
        &brokers(),
        "compacted",
        2,
        &[
            ("cleanup.policy", "compact"),
            ("segment.ms", "500"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("min.compaction.lag.ms", "0"),
            ("max.compaction.lag.ms", "1000"),
            ("message.timestamp.type", "LogAppendTime"),
        ],
    );
    // Tombstones are dead letters (the bad-records policy) with their key.
    f.write_job("table", "[commit]\nmax_rows = 500\n");

    // Before cleaning: every offset is a record.
    produce_keyed(&f, 0, 3_000, 37);
    let first = f.run_once_ok();
    let tombstones = (0..3_000u64).filter(|id| id.is_multiple_of(37)).count() as i64;
    assert_eq!(n(&first, "rows") + n(&first, "dead_letters"), 3_000);
    assert_eq!(n(&first, "dead_letters"), tombstones, "{first}");
    let ends: Vec<i64> = {
        let s = f.state();
        (0..f.partitions)
            .map(|p| s.partition(&f.topic, p).unwrap().end().unwrap())
            .collect()
    };

    // More records (rolling segments), then the cleaner removes superseded ones.
    std::thread::sleep(Duration::from_millis(700));
    produce_keyed(&f, 3_000, 3_000, 41);
    std::thread::sleep(Duration::from_millis(700));
    produce_keyed(&f, 6_000, 300, 0);
    wait_for_cleaning(&f, &ends);

    // After cleaning: the second load sees gaps where the cleaner removed records.
    f.run_once_ok();
    let v = verify_with_kafka(&f);
    assert_eq!(v["violations"].as_array().unwrap().len(), 0, "{v}");

    // A replace over everything loaded: re-derived from the cleaned log, the removed offsets
    // recorded as not records, old files swapped out in one entry.
    let out = f.cli(&["backfill", "--from", "0", "--to", "latest", "--replace"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_table_is_kafka(&f);
    assert!(kafka_now(&f).len() < 6_300, "the cleaner removed nothing");
}
